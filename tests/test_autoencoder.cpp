#define BOOST_TEST_MODULE autoencoder
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/errors.hpp"
#include "support/fixture.hpp"
#include "support/gradcheck.hpp"
#include "support/gradient_announcements.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/models/autoencoder.hpp"
#include "vediff/models/gaussian_posterior.hpp"
#include "vediff/nn/module_list.hpp"
#include "vediff/nn/optional_layer.hpp"
#include "vediff/ops/conv.hpp"
#include "vediff/ops/norm.hpp"
#include "vediff/optim/adamw.hpp"

using namespace vediff;
using namespace vediff::testing;

static_assert(nn::layer<models::resnet_block<double>>);
static_assert(nn::layer<models::attn_block<float>>);
static_assert(nn::layer<models::downsample<double>>);
static_assert(nn::layer<models::upsample<float>>);
static_assert(nn::layer<models::mid_block<double>>);
static_assert(nn::layer<models::encoder<float>>);
static_assert(nn::layer<models::decoder<double>>);
static_assert(nn::layer<nn::optional_layer<nn::conv2d<double>>>);

namespace {

std::vector<std::string> parameter_names(auto& layer) {
    std::vector<std::string> names;
    for (auto& [name, p] : nn::named_parameters(layer)) names.push_back(name);
    return names;
}

/// GroupNorm affine parameters moved away from (1, 0), so that tests see them act.
template <class Layer>
void perturb_norms(Layer& layer, std::uint64_t seed) {
    using T = typename Layer::value_type;
    std::uint64_t stream = 500;
    layer.for_each_parameter([&](const std::string& name, nn::parameter<T, cpu>& p) {
        if (name.find("norm") == std::string::npos) return;
        auto r = random_tensor<T>(p.value.shape(), seed, stream++, 0.2);
        const bool weight = name.ends_with("weight");
        for (std::int64_t i = 0; i < p.value.numel(); ++i) p.value.data()[i] = (weight ? T(1) : T(0)) + r.data()[i];
    }, std::string{});
}

/// The gradient of every AttnBlock's key bias is zero: adding b to every key adds q_i·b to all
/// scores of query i, which the softmax ignores. Finite differences of an exact zero are noise
/// relative to nothing, so the checks skip these (key_bias_gradient_vanishes checks the zero).
template <class Layer>
void skip_key_biases(Layer& layer) {
    using T = typename Layer::value_type;
    layer.for_each_parameter([](const std::string& name, nn::parameter<T, cpu>& p) {
        if (name == "k.bias" || name.ends_with(".k.bias")) p.trainable = false;
    }, std::string{});
}

template <class T>
tensor<T, cpu> nearest2x(const tensor_view<T, cpu>& x) {
    auto y = tensor<T, cpu>::empty({x.dim(0), x.dim(1), 2 * x.dim(2), 2 * x.dim(3)});
    for (std::int64_t n = 0; n < x.dim(0); ++n)
        for (std::int64_t c = 0; c < x.dim(1); ++c)
            for (std::int64_t i = 0; i < y.dim(2); ++i)
                for (std::int64_t j = 0; j < y.dim(3); ++j) y.at(n, c, i, j) = x.at(n, c, i / 2, j / 2);
    return y;
}

// The tiny model of the gradient checks (ch 8, 4 groups, two levels, attention at 4×4).
models::autoencoder_config tiny_grad_config() {
    return {.in_channels = 1, .out_channels = 1, .ch = 8, .ch_mult = {1, 2}, .num_res_blocks = 1, .z_channels = 2,
            .embed_dim = 2, .resolution = 8, .attn_resolutions = {4}, .norm_groups = 4};
}

// The model of tests/fixtures/make_autoencoder.py.
models::autoencoder_config fixture_config() {
    return {.in_channels = 2, .out_channels = 3, .ch = 4, .ch_mult = {1, 2, 2}, .num_res_blocks = 2, .z_channels = 3,
            .embed_dim = 2, .resolution = 16, .attn_resolutions = {8}, .norm_groups = 2};
}

/// encode (or decode) of an autoencoder seen as a layer over the parameters it uses.
template <class T, bool Encode>
struct half_autoencoder {
    using value_type = T;
    using device_type = cpu;
    models::autoencoder_kl<T>& ae;
    tensor<T, cpu> forward(const tensor_view<T, cpu>& x) { return Encode ? ae.encode(x) : ae.decode(x); }
    tensor<T, cpu> backward(const tensor_view<T, cpu>& dy) { return Encode ? ae.encode_backward(dy) : ae.decode_backward(dy); }
    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        if constexpr (Encode) {
            ae.encoder.for_each_parameter(f, nn::join_name(prefix, "encoder"));
            ae.quant_conv.for_each_parameter(f, nn::join_name(prefix, "quant_conv"));
        } else {
            ae.decoder.for_each_parameter(f, nn::join_name(prefix, "decoder"));
            ae.post_quant_conv.for_each_parameter(f, nn::join_name(prefix, "post_quant_conv"));
        }
    }
};

} // namespace

BOOST_AUTO_TEST_SUITE(containers)

BOOST_AUTO_TEST_CASE(module_list_names_items_like_module_list) {
    nn::module_list<nn::conv2d<double>> list;
    list.push_back(nn::conv2d<double>({.in_channels = 2, .out_channels = 3, .kernel_size = 1}));
    list.push_back(nn::conv2d<double>({.in_channels = 3, .out_channels = 3, .kernel_size = 1, .bias = false}));
    BOOST_TEST(list.size() == 2u);
    BOOST_TEST(list[1].config.in_channels == 3);
    const std::vector<std::string> expected{"block.0.weight", "block.0.bias", "block.1.weight"};
    std::vector<std::string> names;
    list.for_each_parameter([&](const std::string& name, auto&) { names.push_back(name); }, "block");
    BOOST_TEST(names == expected, boost::test_tools::per_element());
    const auto msg = error_message<std::out_of_range>([&] { (void)list[2]; });
    BOOST_TEST(contains(msg, "module_list: index 2 out of range for 2 items"), msg);
}

BOOST_AUTO_TEST_CASE(optional_layer_is_the_identity_when_absent) {
    nn::optional_layer<nn::conv2d<double>> absent;
    BOOST_TEST(!absent.has_value());
    BOOST_TEST(nn::parameter_count(absent) == 0);
    auto x = random_tensor<double>({2, 3, 2, 2}, 1);
    auto y = absent.forward(x);
    check_close(y, x, 0, 1e-300, "absent forward");
    BOOST_TEST(y.data() != x.data());
    auto dx = absent.backward(y);
    check_close(dx, x, 0, 1e-300, "absent backward");

    nn::optional_layer<nn::conv2d<double>> present(nn::conv2d<double>({.in_channels = 3, .out_channels = 4, .kernel_size = 1}, 5));
    BOOST_TEST(present.has_value());
    BOOST_TEST(parameter_names(present) == (std::vector<std::string>{"weight", "bias"}), boost::test_tools::per_element());
    auto expected = ops::conv2d(x.view(), present->weight.value.view(), present->bias.value.view());
    check_close(present.forward(x), expected, 0, 1e-300, "present forward");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(blocks)

BOOST_AUTO_TEST_CASE(resnet_block_names_follow_ldm) {
    models::resnet_block<float> same({.in_channels = 8, .out_channels = 8, .norm_groups = 4});
    models::resnet_block<float> wider({.in_channels = 4, .out_channels = 8, .norm_groups = 2});
    const std::vector<std::string> body{"norm1.weight", "norm1.bias", "conv1.weight", "conv1.bias",
                                        "norm2.weight", "norm2.bias", "conv2.weight", "conv2.bias"};
    BOOST_TEST(!same.has_shortcut());
    BOOST_TEST(parameter_names(same) == body, boost::test_tools::per_element());
    auto with_shortcut = body;
    with_shortcut.insert(with_shortcut.end(), {"nin_shortcut.weight", "nin_shortcut.bias"});
    BOOST_TEST(wider.has_shortcut());
    BOOST_TEST(parameter_names(wider) == with_shortcut, boost::test_tools::per_element());
    BOOST_TEST(wider.shortcut->weight.shape() == (tensor_shape{8, 4, 1, 1}));
    BOOST_TEST(wider.body.get<1>().weight.shape() == (tensor_shape{8, 4, 3, 3}));
    BOOST_TEST(wider.body.get<3>().weight.shape() == (tensor_shape{8, 8, 3, 3}));
}

BOOST_AUTO_TEST_CASE(resnet_block_matches_its_definition) {
    // y = nin(x) + conv2(silu(norm2(conv1(silu(norm1 x))))), built here from the ops.
    models::resnet_block<double> block({.in_channels = 4, .out_channels = 6, .norm_groups = 2}, 3);
    perturb_norms(block, 4);
    auto x = random_tensor<double>({2, 4, 5, 3}, 9);
    auto& b = block.body;
    const ops::conv2d_options pad1{1, ops::padding2d::symmetric(1)};
    auto h = ops::silu(ops::group_norm(x.view(), 2, b.get<0>().weight.value.view(), b.get<0>().bias.value.view(), 1e-6).y.view());
    h = ops::conv2d(h.view(), b.get<1>().weight.value.view(), b.get<1>().bias.value.view(), pad1);
    h = ops::silu(ops::group_norm(h.view(), 2, b.get<2>().weight.value.view(), b.get<2>().bias.value.view(), 1e-6).y.view());
    h = ops::conv2d(h.view(), b.get<3>().weight.value.view(), b.get<3>().bias.value.view(), pad1);
    auto expected = ops::add(h.view(), ops::conv2d(x.view(), block.shortcut->weight.value.view(), block.shortcut->bias.value.view()).view());
    check_close(block.forward(x), expected, 1e-13, 1e-13, "resnet_block");
}

template <class T>
void check_resnet_block_gradients(std::int64_t in, std::int64_t out, tensor_shape input_shape) {
    models::resnet_block<T> block({.in_channels = in, .out_channels = out, .norm_groups = 2}, 1);
    perturb_norms(block, 2);
    check_layer_gradients(fmt::format("resnet_block<{}> {}→{}", sizeof(T) == 8 ? "double" : "float", in, out), block, input_shape);
}

BOOST_AUTO_TEST_CASE(resnet_block_gradients_double_and_float) {
    check_resnet_block_gradients<double>(4, 6, {1, 4, 5, 4});
    check_resnet_block_gradients<double>(4, 4, {1, 4, 4, 5});
    check_resnet_block_gradients<float>(4, 6, {1, 4, 5, 4});
    check_resnet_block_gradients<float>(4, 4, {1, 4, 4, 5});
}

BOOST_AUTO_TEST_CASE(attn_block_names_follow_ldm) {
    models::attn_block<float> attn({.channels = 8, .norm_groups = 4});
    const std::vector<std::string> expected{"norm.weight", "norm.bias", "q.weight", "q.bias", "k.weight", "k.bias",
                                            "v.weight", "v.bias", "proj_out.weight", "proj_out.bias"};
    BOOST_TEST(parameter_names(attn) == expected, boost::test_tools::per_element());
    BOOST_TEST(attn.body.q.weight.shape() == (tensor_shape{8, 8, 1, 1}));
}

BOOST_AUTO_TEST_CASE(attn_block_with_zero_queries_averages_the_values) {
    // With q ≡ 0 every score is equal, the softmax is uniform, and each position receives the
    // mean of v over positions: y = x + proj_out(mean_j v[:, j]).
    models::attn_block<double> attn({.channels = 4, .norm_groups = 2}, 7);
    perturb_norms(attn, 8);
    auto& core = attn.body;
    ops::fill(core.q.weight.value.view(), 0.0);
    ops::fill(core.q.bias.value.view(), 0.0);
    auto x = random_tensor<double>({2, 4, 3, 2}, 11);
    auto h = ops::group_norm(x.view(), 2, core.norm.weight.value.view(), core.norm.bias.value.view(), 1e-6).y;
    auto v = ops::conv2d(h.view(), core.v.weight.value.view(), core.v.bias.value.view());
    auto averaged = tensor<double>::empty(v.shape());
    for (std::int64_t n = 0; n < 2; ++n)
        for (std::int64_t c = 0; c < 4; ++c) {
            double mean = 0;
            for (std::int64_t s = 0; s < 6; ++s) mean += v.data()[(n * 4 + c) * 6 + s] / 6;
            for (std::int64_t s = 0; s < 6; ++s) averaged.data()[(n * 4 + c) * 6 + s] = mean;
        }
    auto expected = ops::add(x.view(), ops::conv2d(averaged.view(), core.proj_out.weight.value.view(), core.proj_out.bias.value.view()).view());
    check_close(attn.forward(x), expected, 1e-13, 1e-13, "attn_block with zero queries");
}

template <class T>
void check_attn_block_gradients() {
    models::attn_block<T> attn({.channels = 4, .norm_groups = 2}, 5);
    perturb_norms(attn, 6);
    skip_key_biases(attn);
    check_layer_gradients(sizeof(T) == 8 ? "attn_block<double>" : "attn_block<float>", attn, {1, 4, 3, 3});
}

BOOST_AUTO_TEST_CASE(attn_block_gradients_double_and_float) {
    check_attn_block_gradients<double>();
    check_attn_block_gradients<float>();
    models::attn_block<double> attn({.channels = 4, .norm_groups = 2});
    const auto bad = random_tensor<double>({2, 4, 9}, 1);
    const auto msg = shape_error_message([&] { attn.forward(bad); });
    BOOST_TEST((contains(msg, "attn_block") && contains(msg, "(2, 4, 9)")), msg);
}

BOOST_AUTO_TEST_CASE(key_bias_gradient_vanishes) {
    models::attn_block<double> attn({.channels = 4, .norm_groups = 2}, 5);
    perturb_norms(attn, 6);
    auto x = random_tensor<double>({2, 4, 3, 3}, 1);
    attn.forward(x);
    nn::zero_grad(attn);
    attn.backward(random_tensor<double>({2, 4, 3, 3}, 2));
    double key = 0, query = 0;
    for (auto g : attn.body.k.bias.grad.span()) key = std::max(key, std::abs(g));
    for (auto g : attn.body.q.bias.grad.span()) query = std::max(query, std::abs(g));
    BOOST_TEST(query > 1e-3);
    BOOST_TEST(key < 1e-13 * query);
}

BOOST_AUTO_TEST_CASE(downsample_pads_right_and_bottom_then_strides) {
    models::downsample<double> down(3, 2);
    BOOST_TEST(parameter_names(down) == (std::vector<std::string>{"conv.weight", "conv.bias"}), boost::test_tools::per_element());
    auto x = random_tensor<double>({2, 3, 6, 4}, 3);
    // torch.nn.functional.pad(x, (0, 1, 0, 1)) by hand, then an unpadded stride-2 conv.
    auto padded = tensor<double>::zeros({2, 3, 7, 5});
    for (std::int64_t n = 0; n < 2; ++n)
        for (std::int64_t c = 0; c < 3; ++c)
            for (std::int64_t i = 0; i < 6; ++i)
                for (std::int64_t j = 0; j < 4; ++j) padded.at(n, c, i, j) = x.at(n, c, i, j);
    const auto& conv = down.get<0>();
    auto expected = ops::conv2d(padded.view(), conv.weight.value.view(), conv.bias.value.view(), ops::conv2d_options{2, {}});
    auto y = down.forward(x);
    BOOST_TEST(y.shape() == (tensor_shape{2, 3, 3, 2}));
    check_close(y, expected, 1e-13, 1e-13, "downsample");
}

BOOST_AUTO_TEST_CASE(upsample_repeats_pixels_then_convolves) {
    models::upsample<double> up(3, 4);
    BOOST_TEST(parameter_names(up) == (std::vector<std::string>{"conv.weight", "conv.bias"}), boost::test_tools::per_element());
    auto x = random_tensor<double>({2, 3, 3, 2}, 5);
    const auto& conv = up.get<1>();
    auto expected = ops::conv2d(nearest2x<double>(x).view(), conv.weight.value.view(), conv.bias.value.view(),
                                ops::conv2d_options{1, ops::padding2d::symmetric(1)});
    auto y = up.forward(x);
    BOOST_TEST(y.shape() == (tensor_shape{2, 3, 6, 4}));
    check_close(y, expected, 1e-13, 1e-13, "upsample");
}

BOOST_AUTO_TEST_CASE(resample_gradients_double_and_float) {
    models::downsample<double> down(3, 2);
    check_layer_gradients("downsample<double>", down, {1, 3, 6, 4});
    models::downsample<float> down_f(3, 2);
    check_layer_gradients("downsample<float>", down_f, {1, 3, 6, 4});
    models::upsample<double> up(3, 4);
    check_layer_gradients("upsample<double>", up, {1, 3, 3, 2});
    models::upsample<float> up_f(3, 4);
    check_layer_gradients("upsample<float>", up_f, {1, 3, 3, 2});
}

BOOST_AUTO_TEST_CASE(mid_block_gradients_double) {
    models::mid_block<double> mid(4, 2, 1e-6);
    nn::initialize(mid, 3);
    perturb_norms(mid, 1);
    BOOST_TEST(parameter_names(mid).size() == 8u + 10u + 8u);
    BOOST_TEST(parameter_names(mid).front() == "block_1.norm1.weight");
    BOOST_TEST(parameter_names(mid)[8] == "attn_1.norm.weight");
    BOOST_TEST(parameter_names(mid).back() == "block_2.conv2.bias");
    skip_key_biases(mid);
    check_layer_gradients("mid_block<double>", mid, {1, 4, 3, 3});
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(autoencoder)

BOOST_AUTO_TEST_CASE(default_config_parameters_match_the_ldm_state_dict) {
    // The names, shapes and order of torch's state_dict for the same config (make_autoencoder.py).
    const auto f = load_fixture("autoencoder.txt");
    models::autoencoder_kl<float> ae(models::autoencoder_config{});
    const auto params = nn::named_parameters(ae);
    std::map<std::string, std::vector<double>> reference;
    for (auto& [name, entry] : f.entries)
        if (name.starts_with("default.") && name != "default.parameter_count") reference.emplace(name.substr(8), entry.second);
    BOOST_TEST(params.size() == reference.size());
    BOOST_TEST(params.size() == 152u);
    for (std::size_t i = 0; i < params.size(); ++i) {
        const auto& [name, p] = params[i];
        auto it = reference.find(name);
        BOOST_TEST_REQUIRE((it != reference.end()), "torch's state_dict has no '" << name << "'");
        const tensor_shape shape(it->second.begin() + 1, it->second.end());
        BOOST_TEST(it->second[0] == double(i), name << " is at position " << i << " here, " << it->second[0] << " in torch");
        BOOST_TEST((p->shape() == shape), name << ": shape " << p->shape().to_string() << ", torch " << shape.to_string());
    }
    BOOST_TEST(nn::parameter_count(ae) == std::int64_t(f.scalar("default.parameter_count")));
    BOOST_TEST(nn::parameter_count(ae) == 3786789);
    // A few names spelled out, as in the LDM checkpoints.
    BOOST_TEST(params.front().first == "encoder.conv_in.weight");
    BOOST_TEST(reference.count("encoder.down.1.block.0.nin_shortcut.weight") == 1u);
    BOOST_TEST(reference.count("encoder.down.0.downsample.conv.weight") == 1u);
    BOOST_TEST(reference.count("encoder.mid.attn_1.q.weight") == 1u);
    BOOST_TEST(reference.count("decoder.up.1.upsample.conv.weight") == 1u);
    BOOST_TEST(reference.count("decoder.up.0.block.1.conv2.bias") == 1u);
    BOOST_TEST(params.back().first == "post_quant_conv.bias");
}

BOOST_AUTO_TEST_CASE(default_config_latents_are_4x8x8) {
    models::autoencoder_kl<float> ae(models::autoencoder_config{}, 1);
    BOOST_TEST(ae.latent_shape(2) == (tensor_shape{2, 4, 8, 8}));
    auto x = random_tensor<float>({2, 1, 32, 32}, 3);
    auto moments = ae.encode(x);
    BOOST_TEST(moments.shape() == (tensor_shape{2, 8, 8, 8}));
    auto post = models::gaussian_posterior<float>::from_moments(moments);
    BOOST_TEST(post.mean.shape() == ae.latent_shape(2));
    auto z = post.mode();
    auto x_hat = ae.decode(z);
    BOOST_TEST(x_hat.shape() == x.shape());
}

BOOST_AUTO_TEST_CASE(same_seed_same_weights) {
    models::autoencoder_kl<float> a(tiny_grad_config(), 4), b(tiny_grad_config(), 4), c(tiny_grad_config(), 5);
    const auto pa = nn::named_parameters(a), pb = nn::named_parameters(b), pc = nn::named_parameters(c);
    bool all_equal = true, any_differs = false;
    for (std::size_t i = 0; i < pa.size(); ++i) {
        all_equal = all_equal && pa[i].second->value.to_vector() == pb[i].second->value.to_vector();
        any_differs = any_differs || pa[i].second->value.to_vector() != pc[i].second->value.to_vector();
    }
    BOOST_TEST(all_equal);
    BOOST_TEST(any_differs);
}

BOOST_AUTO_TEST_CASE(tiny_model_gradients_double) {
    models::autoencoder_kl<double> ae(tiny_grad_config(), 2);
    perturb_norms(ae, 3);
    skip_key_biases(ae);
    gradcheck_options<double> opt;
    opt.max_elements = 40;  // per tensor: keeps the ~100 parameter tensors quick
    half_autoencoder<double, true> enc{ae};
    check_layer_gradients("encode<double>", enc, {1, 1, 8, 8}, opt);
    half_autoencoder<double, false> dec{ae};
    check_layer_gradients("decode<double>", dec, {1, 2, 4, 4}, opt);
}

// Data parallelism sends a bucket when backward announces its gradients final: over a training
// step's two backward passes (decode, then encode) every trainable parameter is announced once,
// with the gradient the step ends with.
BOOST_AUTO_TEST_CASE(backward_announces_every_gradient_once_when_final) {
    models::autoencoder_kl<float> ae(tiny_grad_config(), 1);
    philox_generator gen{.seed = 9};
    auto x = random_tensor<float>({2, 1, 8, 8}, 5, 0, 0.5);
    nn::zero_grad(ae);
    auto moments = ae.encode(x);
    auto post = models::gaussian_posterior<float>::from_moments(moments);
    auto z = post.sample(gen);
    auto x_hat = ae.decode(z);
    auto dx_hat = ops::sub(x_hat.view(), x.view());
    announcement_recorder<float, cpu> recorder;
    {
        nn::scoped_gradient_listener listening(&recorder);
        auto dz = ae.decode_backward(dx_hat);
        auto dmean = post.mode();
        auto dlogvar = tensor<float>::zeros(post.logvar.shape());
        post.sample_backward(dz, dmean, dlogvar);
        (void)ae.encode_backward(post.moments_backward(dmean, dlogvar));
    }
    const auto problems = announcement_problems(ae, recorder);
    BOOST_TEST(problems.empty(), (problems.empty() ? std::string() : problems.front()));
    // decoder: head, 2 levels, mid, conv_in; post_quant_conv; quant_conv; encoder: head, mid, 2 levels, conv_in
    BOOST_TEST(recorder.layers == 5 + 1 + 1 + 5);
}

// Backward releases what the forwards kept as it passes (nn/grad_mode.hpp): once a step's two
// backward passes have run, the allocator holds what it held before the step, and a second
// backward of the same forward is an error naming the layer. The adaptive GAN weight's
// weight_gradient of conv_out reads the input decode kept, so it runs before decode_backward.
BOOST_AUTO_TEST_CASE(a_step_keeps_nothing_once_its_backward_has_run) {
    models::autoencoder_kl<float> ae(tiny_grad_config(), 1);
    philox_generator gen{.seed = 9};
    const auto x = random_tensor<float>({2, 1, 8, 8}, 5, 0, 0.5);
    const auto live = [] { return memory<cpu>::stats().live; };
    const std::size_t before = live();
    {
        const auto moments = ae.encode(x);
        auto post = models::gaussian_posterior<float>::from_moments(moments);
        const auto z = post.sample(gen);
        const auto x_hat = ae.decode(z);
        const auto dx_hat = ops::sub(x_hat.view(), x.view());
        const std::size_t after_forward = live();
        auto& conv_out = std::get<2>(ae.decoder.head.layers);
        (void)conv_out.weight_gradient(dx_hat);

        const auto dz = ae.decode_backward(dx_hat);
        BOOST_TEST(live() < after_forward);
        for (const auto& msg : {error_message<std::logic_error>([&] { (void)ae.decode_backward(dx_hat); }),
                                error_message<std::logic_error>([&] { (void)conv_out.weight_gradient(dx_hat); })})
            BOOST_TEST(contains(msg, "conv2d: backward already ran"), msg);
        auto dmean = post.mode();
        auto dlogvar = tensor<float>::zeros(post.logvar.shape());
        post.sample_backward(dz, dmean, dlogvar);
        const auto dmoments = post.moments_backward(dmean, dlogvar);
        (void)ae.encode_backward(dmoments);
        const auto msg = error_message<std::logic_error>([&] { (void)ae.encode_backward(dmoments); });
        BOOST_TEST(contains(msg, "conv2d: backward already ran"), msg);
    }
    BOOST_TEST(live() == before);
}

BOOST_AUTO_TEST_CASE(training_steps_reduce_the_reconstruction_error) {
    // The training data flow of issue 3 with an l2 loss ½‖x̂ − x‖² + the gradient of a
    // ½·Σ mean² term into dmean: encode → posterior → sample → decode, then back.
    models::autoencoder_kl<float> ae(tiny_grad_config(), 1);
    optim::adamw<float> opt(ae, {.lr = 3e-3, .weight_decay = 0});
    philox_generator gen{.seed = 9};
    auto x = random_tensor<float>({4, 1, 8, 8}, 5, 0, 0.5);
    std::vector<double> losses;
    for (int step = 0; step < 60; ++step) {
        nn::zero_grad(ae);
        auto moments = ae.encode(x);
        auto post = models::gaussian_posterior<float>::from_moments(moments);
        auto z = post.sample(gen);
        auto x_hat = ae.decode(z);
        auto dx_hat = ops::sub(x_hat.view(), x.view());
        losses.push_back(0.5 * dot<float>(dx_hat, dx_hat));
        auto dz = ae.decode_backward(dx_hat);
        auto dmean = post.mode();  // ∂(½·Σ mean²)/∂mean
        auto dlogvar = tensor<float>::zeros(post.logvar.shape());
        post.sample_backward(dz, dmean, dlogvar);
        auto dx = ae.encode_backward(post.moments_backward(dmean, dlogvar));
        BOOST_REQUIRE(dx.shape() == x.shape());
        opt.step();
    }
    BOOST_TEST(losses.back() < 0.6 * losses.front(), "loss " << losses.front() << " → " << losses.back());
}

template <class T>
void check_parity(double rtol) {
    const auto f = load_fixture("autoencoder.txt");
    models::autoencoder_kl<T> ae(fixture_config(), 99);
    const auto metadata = io::load_state_dict(std::string(VEDIFF_FIXTURE_DIR) + "/autoencoder_tiny.safetensors", ae);
    BOOST_TEST(metadata.at("note") == "written by make_autoencoder.py");
    const auto close = [&](const tensor<T, cpu>& actual, const std::string& name) {
        auto expected = f.get<double>("tiny." + name);
        double scale = 0;
        for (auto v : expected.span()) scale = std::max(scale, std::abs(v));
        check_close(actual, expected, rtol, rtol * scale, name);
    };
    nn::zero_grad(ae);
    auto x = f.get<T>("tiny.x");
    close(ae.encode(x), "moments");
    close(ae.encode_backward(f.get<T>("tiny.dmoments")), "dx");
    auto z = f.get<T>("tiny.z");
    close(ae.decode(z), "x_hat");
    close(ae.decode_backward(f.get<T>("tiny.dx_hat")), "dz");
    int checked = 0;
    for (auto& [name, p] : nn::named_parameters(ae))
        if (f.entries.count("tiny.grad." + name)) {
            close(p->grad, "grad." + name);
            ++checked;
        }
    BOOST_TEST(checked == 18);
}

BOOST_AUTO_TEST_CASE(matches_pytorch_double) { check_parity<double>(1e-12); }
BOOST_AUTO_TEST_CASE(matches_pytorch_float) { check_parity<float>(1e-4); }

BOOST_AUTO_TEST_CASE(checkpoint_of_another_shape_is_rejected_naming_tensor_and_shapes) {
    temp_dir dir("autoencoder");
    auto other_config = fixture_config();
    other_config.embed_dim = 3;
    models::autoencoder_kl<float> other(other_config);
    io::save_state_dict(dir / "other.safetensors", other);
    models::autoencoder_kl<float> ae(fixture_config());
    const auto before = ae.quant_conv.weight.value.to_vector();
    const auto msg = io_error_message([&] { io::load_state_dict(dir / "other.safetensors", ae); });
    BOOST_TEST(contains(msg, "other.safetensors"), msg);
    BOOST_TEST(contains(msg, "tensor 'quant_conv.weight' has shape (6, 6, 1, 1) in the file but (4, 6, 1, 1) in the model"), msg);
    BOOST_TEST(contains(msg, "'post_quant_conv.weight' has shape (3, 3, 1, 1) in the file but (3, 2, 1, 1)"), msg);
    BOOST_TEST(ae.quant_conv.weight.value.to_vector() == before);  // untouched on error

    // One res block fewer: the file has tensors the model lacks.
    auto fewer = fixture_config();
    fewer.num_res_blocks = 1;
    models::autoencoder_kl<float> small(fewer);
    const auto msg2 = io_error_message(
        [&] { io::load_state_dict(std::string(VEDIFF_FIXTURE_DIR) + "/autoencoder_tiny.safetensors", small); });
    BOOST_TEST((contains(msg2, "unexpected tensors") && contains(msg2, "'encoder.down.0.block.1.conv1.weight'")), msg2);
}

BOOST_AUTO_TEST_CASE(bad_configs_and_inputs_are_named) {
    auto c = tiny_grad_config();
    c.norm_groups = 3;
    auto msg = error_message<std::invalid_argument>([&] { models::autoencoder_kl<float> ae(c); });
    BOOST_TEST((contains(msg, "autoencoder_config") && contains(msg, "norm_groups 3")), msg);
    c = tiny_grad_config();
    c.resolution = 9;
    msg = error_message<std::invalid_argument>([&] { models::autoencoder_kl<float> ae(c); });
    BOOST_TEST(contains(msg, "resolution 9"), msg);
    c = tiny_grad_config();
    c.ch_mult = {};
    msg = error_message<std::invalid_argument>([&] { models::autoencoder_kl<float> ae(c); });
    BOOST_TEST(contains(msg, "ch_mult"), msg);

    models::autoencoder_kl<float> ae(tiny_grad_config());
    const auto three_channels = random_tensor<float>({2, 3, 8, 8}, 1), odd_height = random_tensor<float>({2, 1, 7, 8}, 1);
    msg = shape_error_message([&] { ae.encode(three_channels); });
    BOOST_TEST((contains(msg, "autoencoder_kl::encode") && contains(msg, "(2, 3, 8, 8)")), msg);
    msg = shape_error_message([&] { ae.encode(odd_height); });
    BOOST_TEST((contains(msg, "autoencoder_kl::encode") && contains(msg, "(2, 1, 7, 8)") && contains(msg, "multiples of 2")), msg);
    const auto wrong_latent = random_tensor<float>({2, 4, 4, 4}, 1);
    msg = shape_error_message([&] { ae.decode(wrong_latent); });
    BOOST_TEST((contains(msg, "autoencoder_kl::decode") && contains(msg, "(2, 4, 4, 4)")), msg);
}

BOOST_AUTO_TEST_SUITE_END()
