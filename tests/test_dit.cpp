// Diffusion transformers: DiT and LightningDiT from block policies. Gradient checks of every new
// layer and of whole models, the reference init (exact zeros), state_dict names, RoPE properties,
// checkpoints, label dropout, and parity with PyTorch through the forward tool's code path.
#define BOOST_TEST_MODULE dit
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "support/distinct_parameters.hpp"
#include "support/errors.hpp"
#include "support/gradcheck.hpp"
#include "support/gradient_announcements.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/io/forward_pass.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/models/dit.hpp"
#include "vediff/nn/conditioned.hpp"
#include "vediff/nn/swiglu.hpp"

using namespace vediff;
using namespace vediff::testing;

static_assert(nn::layer<nn::swiglu<float>>);
static_assert(nn::layer<models::dit_attention<double, cpu, models::rope_2d, models::qk_norm>>);
static_assert(nn::conditioned_layer<models::dit_block_layer<float, cpu, models::dit_design>>);
static_assert(nn::conditioned_layer<models::dit_final_layer<float, cpu, models::rms_norm>>);
static_assert(nn::conditioned_layer<nn::conditioned_stack<models::dit_block_layer<float, cpu, models::lightning_dit_design>>>);

namespace {

models::dit_config tiny_config() {
    models::dit_config c;
    c.input_size = 4;
    c.patch_size = 2;
    c.in_channels = 3;
    c.hidden_size = 16;
    c.depth = 2;
    c.num_heads = 2;  // head_dim 8: RoPE needs a multiple of 4
    c.num_classes = 5;
    return c;
}

template <class T>
tensor<std::int32_t> labels(std::initializer_list<std::int32_t> v) {
    return tensor<std::int32_t>::from_host({static_cast<std::int64_t>(v.size())}, v);
}

std::vector<std::string> names_of(auto& model) {
    std::vector<std::string> names;
    model.for_each_parameter([&](const std::string& n, auto&) { names.push_back(n); }, std::string{});
    return names;
}

bool contains_name(const std::vector<std::string>& names, const std::string& n) {
    return std::find(names.begin(), names.end(), n) != names.end();
}

double max_abs(const std::vector<float>& v) {
    double m = 0;
    for (float x : v) m = std::max(m, double(std::abs(x)));
    return m;
}

/// Gradient check of a whole transformer with respect to x and every trainable parameter.
template <class Model>
void check_model_gradients(const std::string& name, Model& model) {
    using T = typename Model::value_type;
    model.train(false, /*keep_for_backward=*/true);  // label dropout would change the function between evaluations
    const auto& c = model.config;
    auto x = random_tensor<T>({2, c.in_channels, c.input_size, c.input_size}, 5, 1);
    auto t = tensor<T>::from_host({2}, {T(0.3), T(0.8)});
    auto y = labels<T>({1, static_cast<std::int32_t>(c.num_classes)});
    auto out = model.forward(x, t, y);
    auto r = random_tensor<T>(out.shape(), 5, 2);
    nn::zero_grad(model);
    auto dx = model.backward(r);
    const std::function<double()> loss = [&] { return dot<T>(model.forward(x, t, y), r); };
    const auto check = [&](const std::string& what, const tensor_view<T, cpu>& value, const tensor_view<T, cpu>& grad) {
        const auto probes = probe_indices(value.numel(), 300);
        const auto numeric = numeric_gradient<T>(value, loss, probes, 1e-5);  // a deep composition: a larger step keeps round-off below 1e-6
        const double err = relative_error(gather<T>(grad, probes), numeric);
        BOOST_TEST(err < 1e-6, name << " gradient of " << what << ": relative error " << err);
    };
    check("x", x, dx);
    for (auto& [pname, p] : nn::named_parameters(model))
        if (p->trainable) check(pname, p->value, p->grad);
}

} // namespace

BOOST_AUTO_TEST_SUITE(dit_layers)

BOOST_AUTO_TEST_CASE(timestep_embedding_is_cos_then_sin) {
    auto t = tensor<double>::from_host({2}, {0.0, 0.75});
    auto e = ops::timestep_embedding(t.view(), 8);
    for (std::int64_t k = 0; k < 4; ++k) {
        const double f = std::exp(-std::log(10000.0) * double(k) / 4.0);
        BOOST_TEST(e.at(1, k) == std::cos(0.75 * f), boost::test_tools::tolerance(1e-14));
        BOOST_TEST(e.at(1, 4 + k) == std::sin(0.75 * f), boost::test_tools::tolerance(1e-14));
        BOOST_TEST(e.at(0, k) == 1.0);
        BOOST_TEST(e.at(0, 4 + k) == 0.0);
    }
}

BOOST_AUTO_TEST_CASE(rope_gradient_and_properties) {
    const std::int64_t grid = 3, hd = 8, n = grid * grid;
    const auto angles = models::rope_2d_angles(hd, grid);
    auto cos = tensor<double>::empty({n, hd}), sin = tensor<double>::empty({n, hd});
    for (std::size_t i = 0; i < angles.size(); ++i) cos.data()[i] = std::cos(angles[i]), sin.data()[i] = std::sin(angles[i]);
    auto x = random_tensor<double>({2, n, 2, hd}, 3);
    check_op_gradients<double>(
        "rope", [&](const op_inputs<double>& in) { return ops::rope(in[0], cos.view(), sin.view()); },
        [&](const tensor_view<double>& dy, const op_inputs<double>&) { return single_gradient(ops::rope_backward(dy, cos.view(), sin.view())); },
        {x.view()});

    // A rotation: every head vector keeps its norm.
    auto y = ops::rope(x.view(), cos.view(), sin.view());
    double worst = 0;
    for (std::int64_t v = 0; v < 2 * n * 2; ++v) {
        double nx = 0, ny = 0;
        for (std::int64_t i = 0; i < hd; ++i) nx += x.data()[v * hd + i] * x.data()[v * hd + i], ny += y.data()[v * hd + i] * y.data()[v * hd + i];
        worst = std::max(worst, std::abs(std::sqrt(nx) - std::sqrt(ny)));
    }
    BOOST_TEST(worst < 1e-12);

    // Scores depend on the relative position only: the same q and k placed at (0,0)/(1,2) and at
    // (1,0)/(2,2) (both shifted one row) give the same dot product; a different offset does not.
    auto q = random_tensor<double>({1, n, 1, hd}, 8), k = random_tensor<double>({1, n, 1, hd}, 9);
    for (std::int64_t p = 1; p < n; ++p)
        for (std::int64_t i = 0; i < hd; ++i) q.data()[p * hd + i] = q.data()[i], k.data()[p * hd + i] = k.data()[i];
    auto qr = ops::rope(q.view(), cos.view(), sin.view()), kr = ops::rope(k.view(), cos.view(), sin.view());
    const auto score = [&](std::int64_t qpos, std::int64_t kpos) {
        double s = 0;
        for (std::int64_t i = 0; i < hd; ++i) s += qr.data()[qpos * hd + i] * kr.data()[kpos * hd + i];
        return s;
    };
    const auto at = [&](std::int64_t row, std::int64_t col) { return row * grid + col; };
    BOOST_TEST(score(at(0, 0), at(1, 2)) == score(at(1, 0), at(2, 2)), boost::test_tools::tolerance(1e-12));
    BOOST_TEST(score(at(0, 0), at(1, 1)) == score(at(0, 1), at(1, 2)), boost::test_tools::tolerance(1e-12));
    BOOST_TEST(std::abs(score(at(0, 0), at(1, 2)) - score(at(0, 0), at(2, 2))) > 1e-6);
}

BOOST_AUTO_TEST_CASE(swiglu_gradients_and_hidden_size) {
    BOOST_TEST(models::swiglu::hidden(64, 4.0) == 170);  // int(2/3 · 256), LightningDiT's rounding
    nn::swiglu<double> ffn(6, 5, 2);
    BOOST_TEST(names_of(ffn) == (std::vector<std::string>{"w12.weight", "w12.bias", "w3.weight", "w3.bias"}), boost::test_tools::per_element());
    check_layer_gradients("swiglu<double>", ffn, {2, 3, 6});
    nn::swiglu<float> ffn_f(6, 5, 2);
    check_layer_gradients("swiglu<float>", ffn_f, {2, 3, 6});
}

BOOST_AUTO_TEST_CASE(attention_gradients_every_policy_mix) {
    const models::dit_attention_config c{.dim = 16, .heads = 2, .grid = 2};
    models::dit_attention<double, cpu, models::no_rope, models::no_qk_norm> plain(c);
    models::dit_attention<double, cpu, models::rope_2d, models::no_qk_norm> rope(c);
    models::dit_attention<double, cpu, models::no_rope, models::qk_norm> qk(c);
    models::dit_attention<double, cpu, models::rope_2d, models::qk_norm> both(c);
    randomize_parameters(qk, 4, 0.4);
    randomize_parameters(both, 4, 0.4);
    check_layer_gradients("attention", plain, {2, 4, 16});
    check_layer_gradients("attention + rope", rope, {2, 4, 16});
    check_layer_gradients("attention + qk norm", qk, {2, 4, 16});
    check_layer_gradients("attention + rope + qk norm", both, {2, 4, 16});
    BOOST_TEST(names_of(both) == (std::vector<std::string>{"qkv.weight", "qkv.bias", "q_norm.weight", "k_norm.weight", "proj.weight", "proj.bias"}),
               boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(block_and_final_layer_gradients) {
    const models::dit_block_config c{.dim = 16, .heads = 2, .mlp_ratio = 2.0, .grid = 2};
    models::dit_block_layer<double, cpu, models::dit_design> dit_block(c, 1);
    models::dit_block_layer<double, cpu, models::lightning_dit_design> lightning_block(c, 1);
    // Non-zero modulation, so that every path carries gradient (the reference init zeroes it).
    randomize_parameters(dit_block, 6, 0.3);
    randomize_parameters(lightning_block, 6, 0.3);
    check_conditioned_layer_gradients("dit block", dit_block, {2, 4, 16}, {2, 16});
    check_conditioned_layer_gradients("lightning dit block", lightning_block, {2, 4, 16}, {2, 16});
    models::dit_final_layer<double, cpu, models::rms_norm> final_layer(16, 12, 2);
    randomize_parameters(final_layer, 7, 0.3);
    check_conditioned_layer_gradients("final layer", final_layer, {2, 4, 16}, {2, 16});
    models::dit_block_layer<float, cpu, models::lightning_dit_design> block_f(c, 1);
    randomize_parameters(block_f, 6, 0.3);
    check_conditioned_layer_gradients("lightning dit block<float>", block_f, {2, 4, 16}, {2, 16});
}

namespace {

/// A layer's forward under nn::no_grad against its forward with gradients: the same values bit
/// for bit (one code path, the attention op's output-only kernel doing the same arithmetic), and
/// nothing kept: a backward after it throws.
template <class Layer, class... Inputs>
void check_no_grad_forward(const std::string& name, Layer& layer, const Inputs&... inputs) {
    const auto with_grad = layer.forward(inputs.view()...).to_vector();
    tensor<float> out;
    {
        nn::no_grad scope;
        out = layer.forward(inputs.view()...);
    }
    BOOST_TEST(max_abs(with_grad) > 0, name);  // a path that carries no signal would compare zeros
    BOOST_TEST_CONTEXT(name << ": no_grad forward against the forward with gradients") {
        BOOST_TEST(out.to_vector() == with_grad, boost::test_tools::per_element());
    }
    const auto msg = error_message<std::logic_error>([&] {
        if constexpr (sizeof...(Inputs) == 1) {
            (void)layer.backward(out.view());
        } else {
            auto dc = tensor<float>::zeros({2, 16});
            (void)layer.backward(out.view(), dc);
        }
    });
    BOOST_TEST(contains(msg, "backward needs a forward"), name << ": " << msg);
}

template <class Design>
void check_block_no_grad(const std::string& name) {
    const models::dit_block_config c{.dim = 16, .heads = 2, .mlp_ratio = 2.0, .grid = 3};
    models::dit_block_layer<float, cpu, Design> block(c, 1);
    randomize_parameters(block, 6, 0.3);  // non-zero modulation: the reference init would zero both branches
    const auto x = random_tensor<float>({2, 9, 16}, 11), cond = random_tensor<float>({2, 16}, 12);
    check_no_grad_forward(name, block, x, cond);
}

template <class Norm>
void check_final_layer_no_grad(const std::string& name) {
    models::dit_final_layer<float, cpu, Norm> final_layer(16, 12, 2);
    randomize_parameters(final_layer, 7, 0.3);
    const auto x = random_tensor<float>({2, 9, 16}, 13), cond = random_tensor<float>({2, 16}, 14);
    check_no_grad_forward(name, final_layer, x, cond);
}

template <class Rope, class QkNorm>
void check_attention_no_grad(const std::string& name) {
    models::dit_attention<float, cpu, Rope, QkNorm> attention({.dim = 16, .heads = 2, .grid = 3});
    randomize_parameters(attention, 4, 0.4);
    check_no_grad_forward(name, attention, random_tensor<float>({2, 9, 16}, 15));
}

} // namespace

BOOST_AUTO_TEST_CASE(no_grad_forward_is_bit_identical_for_every_layer) {
    check_attention_no_grad<models::no_rope, models::no_qk_norm>("attention");
    check_attention_no_grad<models::rope_2d, models::no_qk_norm>("attention + rope");
    check_attention_no_grad<models::no_rope, models::qk_norm>("attention + qk norm");
    check_attention_no_grad<models::rope_2d, models::qk_norm>("attention + rope + qk norm");
    nn::swiglu<float> swiglu(16, 21, 3);
    check_no_grad_forward("swiglu", swiglu, random_tensor<float>({2, 9, 16}, 16));
    check_block_no_grad<models::dit_design>("dit block (layer norm, gelu mlp)");
    check_block_no_grad<models::lightning_dit_design>("lightning dit block (rms norm, swiglu, rope, qk norm)");
    check_block_no_grad<models::dit_block<models::rms_norm, models::gelu_mlp, models::no_rope, models::qk_norm>>("rms norm, gelu, qk norm");
    check_block_no_grad<models::dit_block<models::layer_norm, models::swiglu, models::rope_2d, models::no_qk_norm>>("layer norm, swiglu, rope");
    check_final_layer_no_grad<models::layer_norm>("final layer (layer norm)");
    check_final_layer_no_grad<models::rms_norm>("final layer (rms norm)");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(dit_models)

BOOST_AUTO_TEST_CASE(zero_initialized_models_predict_zero) {
    models::dit<float> dit(tiny_config(), 3);
    models::lightning_dit<float> lightning(tiny_config(), 3);
    auto x = random_tensor<float>({3, 3, 4, 4}, 1);
    auto t = tensor<float>::from_host({3}, {0.1f, 0.5f, 0.9f});
    auto y = labels<float>({0, 4, 5});
    for (float v : dit.forward(x, t, y).to_vector()) BOOST_REQUIRE(v == 0.0f);
    for (float v : lightning.forward(x, t, y).to_vector()) BOOST_REQUIRE(v == 0.0f);
    // ... but not a model whose final layer is not zero.
    ops::fill(lightning.final_layer.linear.bias.value.view(), 0.5f);
    BOOST_TEST(max_abs(lightning.forward(x, t, y).to_vector()) == 0.5);
}

BOOST_AUTO_TEST_CASE(reference_initialization) {
    models::dit<float> dit(tiny_config(), 3);
    const auto bound = std::sqrt(6.0 / (16 + 48));  // xavier for qkv: fan_in 16, fan_out 48
    BOOST_TEST(max_abs(dit.blocks[0].attn.qkv.weight.value.to_vector()) <= bound);
    BOOST_TEST(max_abs(dit.blocks[0].attn.qkv.weight.value.to_vector()) > 0.9 * bound);
    BOOST_TEST(max_abs(dit.blocks[0].attn.qkv.bias.value.to_vector()) == 0.0);
    BOOST_TEST(max_abs(dit.blocks[1].adaLN_modulation.get<1>().weight.value.to_vector()) == 0.0);
    const auto table = dit.y_embedder.embedding_table.weight.value.to_vector();
    double sq = 0;
    for (float v : table) sq += double(v) * v;
    BOOST_TEST(std::sqrt(sq / table.size()) == 0.02, boost::test_tools::tolerance(0.25));
    const auto equal = equal_random_parameters(dit);
    BOOST_TEST(equal.empty());
    BOOST_TEST(random_parameter_count(dit) >= 12);
}

BOOST_AUTO_TEST_CASE(state_dict_names_follow_the_reference) {
    models::dit<float> dit(tiny_config());
    const auto n = names_of(dit);
    for (const char* name : {"pos_embed", "x_embedder.proj.weight", "x_embedder.proj.bias", "t_embedder.mlp.0.weight", "t_embedder.mlp.2.bias",
                             "y_embedder.embedding_table.weight", "blocks.0.attn.qkv.weight", "blocks.1.attn.proj.bias", "blocks.0.mlp.fc1.weight",
                             "blocks.1.mlp.fc2.bias", "blocks.0.adaLN_modulation.1.weight", "final_layer.linear.weight",
                             "final_layer.adaLN_modulation.1.bias"})
        BOOST_TEST(contains_name(n, name), name);
    BOOST_TEST(!contains_name(n, "blocks.0.norm1.weight"));  // LayerNorm without affine
    models::lightning_dit<float> lightning(tiny_config());
    const auto ln = names_of(lightning);
    for (const char* name : {"blocks.0.mlp.w12.weight", "blocks.1.mlp.w3.bias", "blocks.0.attn.q_norm.weight", "blocks.0.attn.k_norm.weight",
                             "blocks.0.norm1.weight", "final_layer.norm_final.weight", "feat_rope.freqs_cos", "feat_rope.freqs_sin"})
        BOOST_TEST(contains_name(ln, name), name);
    BOOST_TEST(!lightning.pos_embed.trainable);
    BOOST_TEST(!lightning.rope_cos.trainable);
    // The label table has the null class; the reference DiT-S/1 (10 classes, 8×8×4) has this many entries.
    BOOST_TEST(dit.y_embedder.embedding_table.num_embeddings() == 6);
    models::dit<float> small(models::dit_config{.input_size = 8, .patch_size = 1, .num_classes = 10}.with_size("S", 1));
    BOOST_TEST(nn::parameter_count(small) == 32494084);  // counted with tests/fixtures/dit_models.py
}

BOOST_AUTO_TEST_CASE(whole_model_gradients) {
    models::dit<double> dit(tiny_config(), 1);
    randomize_parameters(dit, 2, 0.3);
    check_model_gradients("dit", dit);
    auto c = tiny_config();
    c.learn_sigma = true;
    c.patch_size = 1;
    models::lightning_dit<double> lightning(c, 1);
    randomize_parameters(lightning, 2, 0.3);
    check_model_gradients("lightning dit, patch 1, learned sigma", lightning);
}

// Data parallelism sends a bucket when backward announces its gradients final: every trainable
// parameter of both designs is announced once, with the gradient backward ends with.
BOOST_AUTO_TEST_CASE(backward_announces_every_gradient_once_when_final) {
    const auto check = [](auto& model, const std::string& what) {
        randomize_parameters(model, 2, 0.3);
        const auto& c = model.config;
        auto x = random_tensor<float>({2, c.in_channels, c.input_size, c.input_size}, 5, 1);
        auto t = tensor<float>::from_host({2}, {0.3f, 0.8f});
        auto y = labels<float>({1, 2});
        auto out = model.forward(x, t, y);
        auto r = random_tensor<float>(out.shape(), 5, 2);
        nn::zero_grad(model);
        announcement_recorder<float, cpu> recorder;
        {
            nn::scoped_gradient_listener listening(&recorder);
            (void)model.backward(r);
        }
        const auto problems = announcement_problems(model, recorder);
        BOOST_TEST(problems.empty(), what << ": " << (problems.empty() ? std::string() : problems.front()));
        BOOST_TEST(recorder.layers == 1 + int(c.depth) + 3, what);  // final layer, blocks, t, y and x embedders
    };
    models::dit<float> dit(tiny_config(), 1);
    check(dit, "dit");
    models::lightning_dit<float> lightning(tiny_config(), 1);
    check(lightning, "lightning dit");
}

BOOST_AUTO_TEST_CASE(inference_forward_is_the_same_function_and_refuses_backward) {
    // Evaluation mode runs forward under nn::no_grad: the one forward, keeping nothing, gives the
    // output of a forward with gradients bit for bit, and a backward after it throws instead of
    // reading stale state; a training forward after it keeps again and gives the same gradients.
    auto c = tiny_config();
    c.class_dropout_prob = 0.5;
    auto x = random_tensor<float>({2, 3, 4, 4}, 1);
    auto t = tensor<float>::from_host({2}, {0.2f, 0.7f});
    auto y = labels<float>({1, 5});
    auto null_labels = labels<float>({5, 5});
    const auto dy = random_tensor<float>({2, 3, 4, 4}, 9);
    const auto check = [&](auto& model, const std::string& name) {
        randomize_parameters(model, 3, 0.3);
        model.train(true);
        auto out = model.forward(x, t, null_labels);
        nn::zero_grad(model);
        const auto dx_before = model.backward(dy).to_vector();
        const auto gate_grad_before = model.blocks[0].adaLN_modulation.template get<1>().weight.grad.to_vector();
        model.train(false, /*keep_for_backward=*/true);
        const auto with_grad = model.forward(x, t, y).to_vector();
        model.train(false);
        out = model.forward(x, t, y);
        BOOST_TEST(out.to_vector() == with_grad, name);
        const auto msg = error_message<std::logic_error>([&] { (void)model.backward(out); });
        BOOST_TEST(contains(msg, "diffusion_transformer: backward needs a forward run with gradients enabled"), name << ": " << msg);
        // Training again: forward keeps, and backward gives the gradient of a forward with
        // gradients from before the inference pass (null labels: label dropout leaves them as they are).
        model.train(true);
        (void)model.forward(x, t, null_labels);
        nn::zero_grad(model);
        const auto dx_after = model.backward(dy).to_vector();
        const auto gate_grad_after = model.blocks[0].adaLN_modulation.template get<1>().weight.grad.to_vector();
        BOOST_TEST(max_abs(dx_after) > 0, name);
        BOOST_TEST(max_abs(gate_grad_after) > 0, name);
        BOOST_TEST_CONTEXT(name << ": gradients after an inference pass") {
            BOOST_TEST(dx_after == dx_before, boost::test_tools::per_element());
            BOOST_TEST(gate_grad_after == gate_grad_before, boost::test_tools::per_element());
        }
        {
            nn::no_grad scope;  // the explicit switch, for any layer or model
            BOOST_TEST(!nn::grad_enabled());
            (void)model.forward(x, t, y);
        }
        BOOST_TEST(nn::grad_enabled());
        BOOST_TEST(contains(error_message<std::logic_error>([&] { (void)model.backward(out); }), "backward needs a forward"));
        BOOST_TEST(contains(error_message<std::logic_error>([&] { (void)model.blocks[0].attn.qkv.backward(
                                                                          tensor<float>::zeros({2, 4, 48}).view()); }),
                            "linear: backward needs a forward"));
    };
    models::dit<float> dit(c, 1);
    check(dit, "dit");
    models::lightning_dit<float> lightning(c, 1);
    check(lightning, "lightning dit");
}

BOOST_AUTO_TEST_CASE(label_dropout_only_in_training) {
    auto c = tiny_config();
    c.class_dropout_prob = 0.5;
    models::dit<float> dit(c, 1);
    std::vector<std::int32_t> many(2000, 2);
    auto y = tensor<std::int32_t>::from_host({2000}, std::span<const std::int32_t>(many));
    (void)dit.y_embedder.forward(y);
    const auto dropped = dit.y_embedder.last_labels().to_vector();
    const auto nulls = std::count(dropped.begin(), dropped.end(), 5);
    BOOST_TEST(std::count(dropped.begin(), dropped.end(), 2) + nulls == 2000);
    BOOST_TEST(std::abs(double(nulls) / 2000 - 0.5) < 0.05);
    dit.train(false);
    (void)dit.y_embedder.forward(y);
    const auto kept = dit.y_embedder.last_labels().to_vector();
    BOOST_TEST(std::count(kept.begin(), kept.end(), 2) == 2000);
    auto bad = labels<float>({6});
    const auto msg = shape_error_message([&] { (void)dit.y_embedder.forward(bad); });
    BOOST_TEST(contains(msg, "label 6"), msg);
}

BOOST_AUTO_TEST_CASE(checkpoint_round_trip_is_bit_identical) {
    temp_dir dir("dit_checkpoint");
    models::lightning_dit<float> a(tiny_config(), 1), b(tiny_config(), 2);
    randomize_parameters(a, 3, 0.3);
    io::save_state_dict(dir.path / "model.safetensors", a);
    io::load_state_dict(dir.path / "model.safetensors", b);
    a.train(false);
    b.train(false);
    auto x = random_tensor<float>({2, 3, 4, 4}, 1);
    auto t = tensor<float>::from_host({2}, {0.2f, 0.7f});
    auto y = labels<float>({1, 3});
    BOOST_TEST(a.forward(x, t, y).to_vector() == b.forward(x, t, y).to_vector());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(pytorch_parity)

// Fixtures from tests/fixtures/make_forward.py: random weights (norm gains and biases away from 1
// and 0, modulation not zero), outputs computed by the PyTorch reference in float64.
BOOST_AUTO_TEST_CASE(forward_matches_pytorch) {
    const std::filesystem::path root = std::filesystem::path(VEDIFF_FIXTURE_DIR) / "forward";
    const std::vector<std::pair<std::string, std::string>> cases{
        {"dit_p2", "dit"}, {"dit_p1_sigma", "dit"}, {"lightningdit", "lightningdit"}, {"autoencoder", "autoencoder"}};
    for (const auto& [dir, model] : cases) {
        const auto outputs = io::run_forward(model, root / dir / "config.json", root / dir / "weights.safetensors", root / dir / "inputs.safetensors");
        const auto expected = io::load_tensors<float>(root / dir / "outputs.safetensors");
        BOOST_TEST(outputs.size() == expected.size(), dir);
        for (const auto& [name, ref] : expected) {
            BOOST_REQUIRE_MESSAGE(outputs.count(name), dir << ": no output " << name);
            const auto got = outputs.at(name).to_vector(), want = ref.to_vector();
            BOOST_REQUIRE(got.size() == want.size());
            double worst = 0;
            for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, double(std::abs(got[i] - want[i])));
            const double scale = max_abs(want);
            BOOST_TEST(scale > 0.1, dir << "/" << name << " is not trivially small");
            BOOST_TEST(worst / scale < 1e-4, dir << "/" << name << ": max error " << worst << " of max magnitude " << scale);
        }
    }
}

BOOST_AUTO_TEST_CASE(forward_errors_name_the_problem) {
    const std::filesystem::path root = std::filesystem::path(VEDIFF_FIXTURE_DIR) / "forward";
    auto msg = io_error_message([&] {
        (void)io::run_forward("dit", root / "lightningdit" / "config.json", root / "lightningdit" / "weights.safetensors",
                              root / "lightningdit" / "inputs.safetensors");
    });
    BOOST_TEST(contains(msg, "--model lightningdit"), msg);
    msg = io_error_message([&] {
        (void)io::run_forward("lightningdit", root / "lightningdit" / "config.json", root / "dit_p2" / "weights.safetensors",
                              root / "dit_p2" / "inputs.safetensors");
    });
    BOOST_TEST((contains(msg, "blocks.0.mlp.w12.weight") && contains(msg, "missing")), msg);
}

BOOST_AUTO_TEST_SUITE_END()
