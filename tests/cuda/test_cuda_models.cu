// The models instantiated for the cuda device: the DiT (and LightningDiT) and the LDM autoencoder
// compile for vediff::cuda unchanged, which every CI build checks by compiling this file. On a GPU
// the program also runs them: a zero-initialized DiT predicts exactly zero, one flow-matching
// training step and one autoencoder forward and backward give finite values of the right shapes.
// Without a GPU it reports itself skipped (exit code 77); with an unusable one it fails.
#define BOOST_TEST_MODULE cuda_models
#define BOOST_TEST_NO_MAIN
#define BOOST_TEST_ALTERNATIVE_INIT_API
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

#include "vediff/backend/cuda.hpp"
#include "vediff/diffusion/flow_matching.hpp"
#include "vediff/models/autoencoder.hpp"
#include "vediff/models/dit.hpp"
#include "vediff/ops/random.hpp"
#include "vediff/optim/adamw.hpp"
#include "support/cuda_gate.hpp"

using namespace vediff;
using gpu = cuda_device;

// Every member function of the models, compiled for the device.
template struct vediff::models::diffusion_transformer<vediff::models::dit_design, float, gpu>;
template struct vediff::models::diffusion_transformer<vediff::models::lightning_dit_design, float, gpu>;
template struct vediff::models::autoencoder_kl<float, gpu>;

namespace {

models::dit_config small_dit() {
    models::dit_config c;
    c.input_size = 8;
    c.in_channels = 4;
    c.num_classes = 10;
    c.hidden_size = 64;
    c.depth = 2;
    c.num_heads = 4;
    c.patch_size = 2;
    return c;
}

bool all_finite(const std::vector<float>& v) {
    for (float x : v)
        if (!std::isfinite(x)) return false;
    return true;
}

} // namespace

BOOST_AUTO_TEST_CASE(dit_predicts_zero_at_init_and_takes_a_training_step) {
    models::dit<float, gpu> model(small_dit(), 0);
    philox_generator data{.seed = 1};
    const auto x1 = ops::normal<float, gpu>({8, 4, 8, 8}, data);
    std::vector<std::int32_t> labels = {0, 1, 2, 3, 4, 5, 6, 7};
    const auto y = tensor<std::int32_t, gpu>::from_host({8}, std::span<const std::int32_t>(labels));
    philox_generator gen{.seed = 2};
    const auto pair = diffusion::make_training_pair(x1.view(), gen, diffusion::flow_matching_config{});
    const auto v = model.forward(pair.x_t, pair.t, y);
    BOOST_TEST(v.shape() == x1.shape());
    const auto values = v.to_vector();
    BOOST_TEST(values == std::vector<float>(values.size(), 0.0f), boost::test_tools::per_element());

    optim::adamw<float, gpu> opt(model, {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0});
    opt.zero_grad();
    const auto loss = diffusion::flow_matching_loss(v.view(), pair.target.view(), diffusion::flow_matching_config{});
    BOOST_TEST(std::isfinite(loss.value));
    (void)model.backward(loss.dv);
    opt.step();
    const auto after = model.forward(pair.x_t, pair.t, y).to_vector();
    BOOST_TEST(all_finite(after));
    BOOST_TEST(after != values);  // the zero-initialized output layer moved
}

BOOST_AUTO_TEST_CASE(autoencoder_encodes_decodes_and_backpropagates) {
    models::autoencoder_config c;
    c.ch = 32;
    c.ch_mult = {1, 2};
    c.norm_groups = 8;
    models::autoencoder_kl<float, gpu> ae(c, 0);
    philox_generator data{.seed = 3};
    const auto x = ops::uniform<float, gpu>({2, 1, 32, 32}, data, -1.0f, 1.0f);
    const auto moments = ae.encode(x);
    BOOST_TEST(moments.shape() == (tensor_shape{2, 2 * c.embed_dim, 16, 16}));
    const auto z = tensor<float, gpu>::copy_of(moments.view().reshape({2, 2, c.embed_dim, 16, 16})[0]);  // any (2, 4, 16, 16) values
    const auto decoded = ae.decode(z);
    BOOST_TEST(decoded.shape() == x.shape());
    BOOST_TEST(all_finite(decoded.to_vector()));
    const auto dz = ae.decode_backward(decoded.view());
    BOOST_TEST(dz.shape() == z.shape());
    BOOST_TEST(all_finite(dz.to_vector()));
    const auto dx = ae.encode_backward(moments.view());
    BOOST_TEST(dx.shape() == x.shape());
    BOOST_TEST(all_finite(dx.to_vector()));
}

int main(int argc, char* argv[]) {
    if (const int gate = testing::cuda_test_gate("cuda_models"); gate != 0) return gate;
    set_cuda_conv_tf32(false);  // compared with the cpu at fp32 precision (TF32 convolutions are the default)
    return boost::unit_test::unit_test_main(&init_unit_test, argc, argv);  // init_unit_test: BOOST_TEST_MODULE's
}
