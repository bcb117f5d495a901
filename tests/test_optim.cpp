#define BOOST_TEST_MODULE optim
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <omp.h>

#include <unistd.h>

#include "support/fixture.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/optim/adamw.hpp"
#include "vediff/optim/clip.hpp"
#include "vediff/optim/schedule.hpp"

using namespace vediff;
using vediff::testing::check_close;

namespace {

// A test-local layer: a (3, 4) weight, a (4) bias and a fixed (2, 2) table that no optimizer may touch.
template <class T = double>
struct toy_layer {
    using value_type = T;
    using device_type = cpu;
    nn::parameter<T, cpu> weight{{3, 4}};
    nn::parameter<T, cpu> bias{{4}};
    nn::parameter<T, cpu> table{{2, 2}, false};

    tensor<T, cpu> forward(tensor<T, cpu>&&) = delete;  // the layer contract: no temporary inputs
    tensor<T, cpu> forward(const tensor_view<T, cpu>& x) { return tensor<T, cpu>::copy_of(x); }
    tensor<T, cpu> backward(const tensor_view<T, cpu>& dy) { return tensor<T, cpu>::copy_of(dy); }
    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        f(nn::join_name(prefix, "weight"), weight);
        f(nn::join_name(prefix, "bias"), bias);
        f(nn::join_name(prefix, "table"), table);
    }
};
static_assert(nn::layer<toy_layer<double>>);
static_assert(nn::layer<toy_layer<float>>);

const testing::fixture& fx() {
    static const auto f = testing::load_fixture("optim.txt");
    return f;
}

template <class T>
void set_from(const tensor_view<T, cpu>& dst, const std::string& name) {
    auto src = fx().get<T>(name);
    ops::copy(dst, src.view());
}

template <class T>
void run_torch_adamw(const std::string& tag, int steps, optim::adamw_config cfg, int lr_change_step, double new_lr, double rtol) {
    toy_layer<T> layer;
    set_from<T>(layer.weight.value, tag + ".weight0");
    set_from<T>(layer.bias.value, tag + ".bias0");
    ops::fill(layer.table.value.view(), T(3));
    ops::fill(layer.table.grad.view(), T(1));
    optim::adamw opt(layer, cfg);
    for (int s = 1; s <= steps; ++s) {
        if (s - 1 == lr_change_step) opt.set_lr(new_lr);
        set_from<T>(layer.weight.grad, tag + ".grad_weight" + std::to_string(s));
        set_from<T>(layer.bias.grad, tag + ".grad_bias" + std::to_string(s));
        opt.step();
        check_close(layer.weight.value, fx().get<T>(tag + ".weight" + std::to_string(s)), rtol, rtol, tag + " weight after step " + std::to_string(s));
        check_close(layer.bias.value, fx().get<T>(tag + ".bias" + std::to_string(s)), rtol, rtol, tag + " bias after step " + std::to_string(s));
    }
    BOOST_TEST(opt.step_count() == steps);
    for (auto v : layer.table.value.span()) BOOST_TEST(v == T(3));  // non-trainable: untouched
}

} // namespace

BOOST_AUTO_TEST_SUITE(adamw)

BOOST_AUTO_TEST_CASE(first_two_steps_by_hand) {
    // Step 1 with m = v = 0: m̂ = g and v̂ = g², so p1 = p0(1 − lr·wd) − lr·g/(|g| + eps).
    toy_layer<double> layer;
    const double lr = 0.1, wd = 0.5, eps = 1e-3, b1 = 0.8, b2 = 0.9;
    const std::vector<double> p0 = {1, -2, 0.5, 3}, g1 = {0.2, -0.4, 0.0, 2.0}, g2 = {-0.1, 0.3, 0.5, 1.0};
    std::copy(p0.begin(), p0.end(), layer.bias.value.data());
    std::copy(g1.begin(), g1.end(), layer.bias.grad.data());
    // Non-zero weights with zero gradients: only the decoupled decay can move them.
    std::vector<double> w0(12);
    for (std::size_t i = 0; i < w0.size(); ++i) w0[i] = (i % 2 ? -0.25 : 0.5) * double(i + 1);
    std::copy(w0.begin(), w0.end(), layer.weight.value.data());
    optim::adamw opt(layer, {lr, b1, b2, eps, wd});
    opt.step();
    std::vector<double> p1(4);
    for (int i = 0; i < 4; ++i) {
        p1[i] = p0[i] * (1 - lr * wd) - lr * g1[i] / (std::abs(g1[i]) + eps);
        BOOST_TEST(layer.bias.value.at(i) == p1[i], boost::test_tools::tolerance(1e-14));
    }
    // Step 2 from the formulas with bias corrections 1 − β^2.
    std::copy(g2.begin(), g2.end(), layer.bias.grad.data());
    opt.step();
    for (int i = 0; i < 4; ++i) {
        const double m = b1 * (1 - b1) * g1[i] + (1 - b1) * g2[i];
        const double v = b2 * (1 - b2) * g1[i] * g1[i] + (1 - b2) * g2[i] * g2[i];
        const double mhat = m / (1 - b1 * b1), vhat = v / (1 - b2 * b2);
        const double p2 = p1[i] * (1 - lr * wd) - lr * mhat / (std::sqrt(vhat) + eps);
        BOOST_TEST(layer.bias.value.at(i) == p2, boost::test_tools::tolerance(1e-13));
        BOOST_TEST(opt.find("bias")->exp_avg.at(i) == m, boost::test_tools::tolerance(1e-14));
        BOOST_TEST(opt.find("bias")->exp_avg_sq.at(i) == v, boost::test_tools::tolerance(1e-14));
    }
    // The weight had zero gradients, so Adam's step is 0/(0 + eps) = 0 and only the decoupled
    // decay acted, twice: w0·(1 − lr·wd)². (An L2 penalty added to the gradient instead would have
    // gone through the normalization and moved each weight by about lr per step.)
    for (std::size_t i = 0; i < w0.size(); ++i)
        BOOST_TEST(layer.weight.value.span()[i] == w0[i] * (1 - lr * wd) * (1 - lr * wd),
                   boost::test_tools::tolerance(1e-15));
}

BOOST_AUTO_TEST_CASE(matches_torch_double) {
    run_torch_adamw<double>("adamw_a", 5, {1e-2, 0.9, 0.95, 1e-8, 0.1}, 3, 5e-3, 1e-12);
    run_torch_adamw<double>("adamw_b", 3, {3e-3, 0.5, 0.9, 1e-6, 0.0}, -1, 0, 1e-12);
}

BOOST_AUTO_TEST_CASE(matches_torch_float) {
    run_torch_adamw<float>("adamw_a", 5, {1e-2, 0.9, 0.95, 1e-8, 0.1}, 3, 5e-3, 2e-6);
    run_torch_adamw<float>("adamw_b", 3, {3e-3, 0.5, 0.9, 1e-6, 0.0}, -1, 0, 2e-6);
}

BOOST_AUTO_TEST_CASE(skips_non_trainable_and_zeroes_grads) {
    toy_layer<float> layer;
    optim::adamw opt(layer, {});
    BOOST_TEST(opt.slots().size() == 2u);
    BOOST_TEST(opt.find("weight") != nullptr);
    BOOST_TEST(opt.find("table") == nullptr);
    ops::fill(layer.weight.grad.view(), 1.0f);
    ops::fill(layer.table.grad.view(), 1.0f);
    opt.zero_grad();
    for (auto g : layer.weight.grad.span()) BOOST_TEST(g == 0.0f);
    for (auto g : layer.table.grad.span()) BOOST_TEST(g == 1.0f);  // not the optimizer's
    BOOST_CHECK_THROW(opt.set_lr(-1.0), std::invalid_argument);
    BOOST_CHECK_THROW((optim::adamw<float>(layer, {1e-3, 1.0, 0.999, 1e-8, 0})), std::invalid_argument);
    opt.set_lr(0.5);
    BOOST_TEST(opt.lr() == 0.5);
}

BOOST_AUTO_TEST_CASE(state_restores_bit_exactly_through_safetensors) {
    const auto dir = std::filesystem::temp_directory_path() / ("vediff_optim_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    auto set_grads = [](toy_layer<float>& l, int step) {
        auto gw = testing::random_tensor<float>(l.weight.shape(), 40 + step);
        auto gb = testing::random_tensor<float>(l.bias.shape(), 80 + step);
        ops::copy(l.weight.grad.view(), gw.view());
        ops::copy(l.bias.grad.view(), gb.view());
    };
    const optim::adamw_config cfg{2e-2, 0.9, 0.95, 1e-8, 0.05};

    toy_layer<float> a;
    testing::randomize_parameters(a, 3);
    optim::adamw opt_a(a, cfg);
    for (int s = 0; s < 3; ++s) {
        set_grads(a, s);
        opt_a.step();
    }
    // Save the model and the optimizer state, then continue in a fresh pair loaded from disk.
    io::save_state_dict(dir / "model.safetensors", a);
    io::safetensors_writer w;
    opt_a.for_each_state([&](const std::string& name, tensor<float>& t) { w.add(name, t.view()); });
    w.add_metadata("step", std::to_string(opt_a.step_count()));
    w.write(dir / "optim.safetensors");

    toy_layer<float> b;
    io::load_state_dict(dir / "model.safetensors", b);
    optim::adamw opt_b(b, cfg);
    io::safetensors_file f(dir / "optim.safetensors");
    opt_b.for_each_state([&](const std::string& name, tensor<float>& t) { f.read_into(name, t.view()); });
    opt_b.set_step_count(std::stoll(f.metadata().at("step")));

    for (int s = 3; s < 6; ++s) {
        set_grads(a, s);
        set_grads(b, s);
        opt_a.step();
        opt_b.step();
    }
    BOOST_TEST(a.weight.value.to_vector() == b.weight.value.to_vector());
    BOOST_TEST(a.bias.value.to_vector() == b.bias.value.to_vector());
    BOOST_TEST(opt_b.step_count() == 6);
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(clip)

BOOST_AUTO_TEST_CASE(matches_torch_clip_grad_norm) {
    for (std::string tag : {"clip_small", "clip_large"}) {
        toy_layer<double> layer;
        set_from<double>(layer.weight.grad, tag + ".grad_weight");
        set_from<double>(layer.bias.grad, tag + ".grad_bias");
        ops::fill(layer.table.grad.view(), 100.0);  // non-trainable: neither counted nor scaled
        const double norm = optim::clip_grad_norm(layer, fx().scalar(tag + ".max_norm"));
        BOOST_TEST(norm == fx().scalar(tag + ".norm"), boost::test_tools::tolerance(1e-13));
        check_close(layer.weight.grad, fx().get<double>(tag + ".clipped_weight"), 1e-13, 1e-15, tag + " weight grad");
        check_close(layer.bias.grad, fx().get<double>(tag + ".clipped_bias"), 1e-13, 1e-15, tag + " bias grad");
        for (auto g : layer.table.grad.span()) BOOST_TEST(g == 100.0);
    }
}

BOOST_AUTO_TEST_CASE(norm_in_float_and_after_clipping) {
    toy_layer<float> layer;
    ops::fill(layer.weight.grad.view(), 1.0f);  // 12 ones
    ops::fill(layer.bias.grad.view(), 1.0f);    // 4 ones: norm 4
    BOOST_TEST(optim::global_grad_norm(layer) == 4.0);
    BOOST_TEST(optim::clip_grad_norm(layer, 2.0) == 4.0);
    BOOST_TEST(optim::global_grad_norm(layer) == 2.0, boost::test_tools::tolerance(1e-6));
    layer.bias.grad.at(0) = std::nanf("");
    BOOST_CHECK_THROW(optim::clip_grad_norm(layer, 1.0, true), numeric_error);
}

BOOST_AUTO_TEST_CASE(sum_of_squares_is_independent_of_thread_count) {
    // Values of mixed magnitudes, so that the order of the additions changes the rounded sum: the
    // kernel must add fixed chunks of 8192 and then the chunk sums in order, whatever the threads.
    const std::int64_t n = 50000, chunk = 8192;
    std::vector<double> x(static_cast<std::size_t>(n));
    for (std::int64_t k = 0; k < n; ++k)
        x[static_cast<std::size_t>(k)] = (k % 7 == 0 ? 1e5 : 1e-3) * (1.0 + philox_uniform<double>(11, 0, 0, std::uint64_t(k)));
    double chunked = 0, serial = 0;
    for (std::int64_t c = 0; c * chunk < n; ++c) {
        double s = 0;
        for (std::int64_t i = c * chunk; i < std::min(n, (c + 1) * chunk); ++i) s += x[std::size_t(i)] * x[std::size_t(i)];
        chunked += s;
    }
    for (double v : x) serial += v * v;
    BOOST_REQUIRE(chunked != serial);  // the data does tell orders apart
    const int threads = omp_get_max_threads();
    for (int t : {1, 2, 3, 8}) {
        omp_set_num_threads(t);
        BOOST_TEST(optim_kernels<cpu>::sum_of_squares(x.data(), n) == chunked);
    }
    omp_set_num_threads(threads);
}

BOOST_AUTO_TEST_CASE(the_multi_tensor_sum_of_squares_adds_each_tensors_sum_in_list_order) {
    // What global_grad_norm takes: the per-tensor sums, in list order, so that a model's norm (and
    // the clipped gradients of a resumed run) do not change with the multi-tensor call.
    std::vector<std::vector<double>> values;
    const std::vector<std::int64_t> lengths{3, 20000, 0, 777};
    std::vector<const double*> pointers;
    double want = 0;
    for (std::size_t i = 0; i < lengths.size(); ++i) {
        values.emplace_back(static_cast<std::size_t>(lengths[i]));
        for (std::size_t k = 0; k < values.back().size(); ++k)
            values.back()[k] = (k % 5 == 0 ? 1e4 : 1e-2) * philox_uniform<double>(12, i, 0, std::uint64_t(k));
    }
    for (std::size_t i = 0; i < lengths.size(); ++i) {
        pointers.push_back(values[i].data());
        want += optim_kernels<cpu>::sum_of_squares(values[i].data(), lengths[i]);
    }
    BOOST_TEST(optim_kernels<cpu>::sum_of_squares_many(std::span<const double* const>(pointers), std::span<const std::int64_t>(lengths)) ==
               want);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(schedule)

BOOST_AUTO_TEST_CASE(warmup_then_constant) {
    const auto s = optim::constant_with_warmup(1e-3, 10);
    BOOST_TEST(s(0) == 0.0);
    BOOST_TEST(s(5) == 5e-4, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(s(10) == 1e-3);
    BOOST_TEST(s(100000) == 1e-3);
    const auto f = optim::constant_with_warmup(1e-3, 10, 0.1);  // from a fraction
    BOOST_TEST(f(0) == 1e-4, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(f(5) == 5.5e-4, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(optim::constant_with_warmup(2e-4, 0)(0) == 2e-4);
}

BOOST_AUTO_TEST_CASE(warmup_then_cosine_to_floor) {
    const auto s = optim::cosine_with_warmup(1e-3, 100, 1100, 1e-5);
    BOOST_TEST(s(50) == 5e-4, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(s(100) == 1e-3, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(s(600) == (1e-3 + 1e-5) / 2, boost::test_tools::tolerance(1e-12));  // half way: the mean
    BOOST_TEST(s(350) == 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + std::cos(M_PI / 4)), boost::test_tools::tolerance(1e-12));
    BOOST_TEST(s(1100) == 1e-5);
    BOOST_TEST(s(5000) == 1e-5);
    for (std::int64_t t = 101; t <= 1100; ++t) BOOST_REQUIRE(s(t) <= s(t - 1));  // monotone after warmup
    BOOST_CHECK_THROW(optim::cosine_with_warmup(1e-3, 100, 100)(0), std::invalid_argument);
    BOOST_CHECK_THROW(s(-1), std::invalid_argument);
    BOOST_CHECK_THROW(optim::cosine_with_warmup(1e-3, 0, 10, 2e-3)(0), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()
