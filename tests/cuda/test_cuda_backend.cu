// The cuda backend against host references written out as loops (this translation unit is
// compiled by nvcc and sees only the cuda backend): transfers, memory, elementwise ops, products
// forward and backward, the allocator's cache and its out-of-memory error. Without a GPU the
// program reports itself skipped to ctest (exit code 77), never passed; a machine whose GPU is present
// but unusable fails (support/cuda_gate.hpp).
#define BOOST_TEST_MODULE cuda_backend
#define BOOST_TEST_NO_MAIN
#define BOOST_TEST_ALTERNATIVE_INIT_API
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

#include <thrust/execution_policy.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include "vediff/backend/cpu/memory.hpp"  // host memory only: no Eigen, no OpenMP kernels
#include "vediff/backend/cuda.hpp"
#include "vediff/core/bfloat16.hpp"
#include "vediff/core/precision.hpp"
#include "vediff/core/random.hpp"
#include "vediff/core/transfer.hpp"
#include "vediff/ops/activation.hpp"
#include "vediff/ops/attention.hpp"
#include "vediff/ops/embedding.hpp"
#include "vediff/ops/broadcast.hpp"
#include "vediff/ops/conv.hpp"
#include "vediff/ops/elementwise.hpp"
#include "vediff/ops/reduce.hpp"
#include "vediff/ops/softmax.hpp"
#include "vediff/ops/gemm.hpp"
#include "vediff/ops/norm.hpp"
#include "vediff/ops/random.hpp"
#include "support/cuda_gate.hpp"

using namespace vediff;
// CUDA's own headers declare a global namespace `cuda` (libcu++): spell vediff's device out.
using gpu = cuda_device;

namespace {

/// Host tensors without a host backend: plain vectors with a shape.
struct host_matrix {
    tensor_shape shape;
    std::vector<float> values;
    float operator()(std::int64_t i, std::int64_t j) const { return values[static_cast<std::size_t>(i * shape[1] + j)]; }
};

host_matrix random_matrix(tensor_shape shape, std::uint64_t seed) {
    host_matrix m{shape, std::vector<float>(static_cast<std::size_t>(shape.numel()))};
    for (std::size_t i = 0; i < m.values.size(); ++i)
        m.values[i] = static_cast<float>(philox_normal<double>(seed, 0, 0, static_cast<std::uint64_t>(i)));
    return m;
}

tensor<float, gpu> on_device(const host_matrix& m) { return tensor<float, gpu>::from_host(m.shape, std::span<const float>(m.values)); }

/// op(A)·op(B) in double, row-major m × n.
std::vector<double> naive_matmul(const host_matrix& a, const host_matrix& b, bool ta, bool tb) {
    const std::int64_t m = ta ? a.shape[1] : a.shape[0], k = ta ? a.shape[0] : a.shape[1], n = tb ? b.shape[0] : b.shape[1];
    std::vector<double> c(static_cast<std::size_t>(m * n), 0.0);
    for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t j = 0; j < n; ++j) {
            double s = 0;
            for (std::int64_t p = 0; p < k; ++p) s += double(ta ? a(p, i) : a(i, p)) * double(tb ? b(j, p) : b(p, j));
            c[static_cast<std::size_t>(i * n + j)] = s;
        }
    return c;
}

/// Largest |got − want| relative to want's largest magnitude.
double relative_difference(const std::vector<float>& got, const std::vector<double>& want) {
    BOOST_REQUIRE_EQUAL(got.size(), want.size());
    double worst = 0, scale = 1e-30;
    for (std::size_t i = 0; i < got.size(); ++i) {
        worst = std::max(worst, std::abs(double(got[i]) - want[i]));
        scale = std::max(scale, std::abs(want[i]));
    }
    return worst / scale;
}

} // namespace

BOOST_AUTO_TEST_CASE(transfers_round_trip_exactly) {
    const auto host = random_matrix({15, 7}, 1);
    const auto device = on_device(host);
    BOOST_TEST(device.shape() == host.shape);
    BOOST_TEST(device.to_vector() == host.values, boost::test_tools::per_element());
    const auto copy = to<gpu>(device.view());  // same device: a clone
    BOOST_TEST(copy.data() != device.data());
    BOOST_TEST(copy.to_vector() == host.values, boost::test_tools::per_element());
    const auto filled = tensor<float, gpu>::full({4}, 2.5f).to_vector();
    BOOST_TEST(filled == std::vector<float>(4, 2.5f), boost::test_tools::per_element());
    const auto zeros = tensor<double, gpu>::zeros({3}).to_vector();
    BOOST_TEST(zeros == std::vector<double>(3, 0.0), boost::test_tools::per_element());
    // Through the cpu device and back.
    const auto host_copy = to<cpu>(device.view());
    BOOST_TEST(host_copy.to_vector() == host.values, boost::test_tools::per_element());
    BOOST_TEST(to<gpu>(host_copy.view()).to_vector() == host.values, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(elementwise_ops_match_host_loops) {
    const auto a = random_matrix({1000, 3}, 2), b = random_matrix({1000, 3}, 3);
    const auto da = on_device(a), db = on_device(b);
    const auto expect = [&](auto f) {
        std::vector<double> r(a.values.size());
        for (std::size_t i = 0; i < r.size(); ++i) r[i] = f(double(a.values[i]), double(b.values[i]));
        return r;
    };
    BOOST_TEST(relative_difference(ops::add(da.view(), db.view()).to_vector(), expect([](double x, double y) { return x + y; })) < 1e-7);
    BOOST_TEST(relative_difference(ops::sub(da.view(), db.view()).to_vector(), expect([](double x, double y) { return x - y; })) < 1e-7);
    BOOST_TEST(relative_difference(ops::mul(da.view(), db.view()).to_vector(), expect([](double x, double y) { return x * y; })) < 1e-7);
    BOOST_TEST(relative_difference(ops::scale(da.view(), 0.5f).to_vector(), expect([](double x, double) { return 0.5 * x; })) == 0.0);
    BOOST_TEST(relative_difference(ops::add_scalar(da.view(), 1.5f).to_vector(), expect([](double x, double) { return x + 1.5; })) < 1e-7);
    // Quotients: compared elementwise in relative terms (a large quotient would hide the others).
    const auto q = ops::div(da.view(), db.view()).to_vector();
    double worst = 0;
    for (std::size_t i = 0; i < q.size(); ++i) {
        const double want = double(a.values[i]) / double(b.values[i]);
        worst = std::max(worst, std::abs(q[i] - want) / std::abs(want));
    }
    BOOST_TEST(worst < 1e-6);
    auto dy = on_device(a);
    ops::axpby(dy.view(), db.view(), 2.0f, -0.5f);
    BOOST_TEST(relative_difference(dy.to_vector(), expect([](double x, double y) { return 2.0 * y - 0.5 * x; })) < 1e-6);
    ops::axpy(dy.view(), db.view(), -2.0f);  // back to −0.5·a
    BOOST_TEST(relative_difference(dy.to_vector(), expect([](double x, double) { return -0.5 * x; })) < 1e-6);
}

BOOST_AUTO_TEST_CASE(activations_and_their_gradients_match_host_formulas) {
    auto x = random_matrix({4000, 1}, 14);
    for (auto& v : x.values) v *= 3.0f;  // out to the tails of the curves
    const auto dy = random_matrix({4000, 1}, 15);
    const auto dx_ = on_device(x), ddy = on_device(dy);
    std::vector<double> silu, silu_grad, gelu, gelu_grad;
    for (std::size_t i = 0; i < x.values.size(); ++i) {
        const double v = x.values[i], g = dy.values[i], s = 1.0 / (1.0 + std::exp(-v));
        silu.push_back(v * s);
        silu_grad.push_back(g * s * (1.0 + v * (1.0 - s)));
        const double k = 0.7978845608028654, th = std::tanh(k * (v + 0.044715 * v * v * v));
        gelu.push_back(0.5 * v * (1.0 + th));
        gelu_grad.push_back(g * (0.5 * (1.0 + th) + 0.5 * v * (1.0 - th * th) * k * (1.0 + 3 * 0.044715 * v * v)));
    }
    BOOST_TEST(relative_difference(ops::silu(dx_.view()).to_vector(), silu) < 1e-6);
    BOOST_TEST(relative_difference(ops::silu_backward(ddy.view(), dx_.view()).to_vector(), silu_grad) < 1e-6);
    BOOST_TEST(relative_difference(ops::gelu_tanh(dx_.view()).to_vector(), gelu) < 1e-6);
    BOOST_TEST(relative_difference(ops::gelu_tanh_backward(ddy.view(), dx_.view()).to_vector(), gelu_grad) < 1e-6);
}

BOOST_AUTO_TEST_CASE(products_match_host_loops_for_every_transpose) {
    for (int t = 0; t < 4; ++t) {
        const bool ta = t & 1, tb = t & 2;
        BOOST_TEST_CONTEXT("transpose a " << ta << ", transpose b " << tb) {
            const std::int64_t m = 67, n = 45, k = 130;
            const auto a = random_matrix(ta ? tensor_shape{k, m} : tensor_shape{m, k}, 4);
            const auto b = random_matrix(tb ? tensor_shape{n, k} : tensor_shape{k, n}, 5);
            const auto got = ops::matmul(on_device(a).view(), on_device(b).view(), ta, tb);
            BOOST_TEST(got.shape() == (tensor_shape{m, n}));
            BOOST_TEST(relative_difference(got.to_vector(), naive_matmul(a, b, ta, tb)) < 1e-5);
        }
    }
}

BOOST_AUTO_TEST_CASE(linear_forward_and_backward_match_host_loops) {
    const std::int64_t rows = 132, in = 48, out = 20;
    const auto x = random_matrix({rows, in}, 6), w = random_matrix({out, in}, 7), bias = random_matrix({1, out}, 8);
    const auto dy = random_matrix({rows, out}, 9);
    const auto dx_ = on_device(x), dw_ = on_device(w), ddy = on_device(dy);
    const auto db_ = tensor<float, gpu>::from_host({out}, std::span<const float>(bias.values));
    auto want = naive_matmul(x, w, false, true);
    for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t j = 0; j < out; ++j) want[static_cast<std::size_t>(r * out + j)] += bias.values[static_cast<std::size_t>(j)];
    BOOST_TEST(relative_difference(ops::linear(dx_.view(), dw_.view(), db_.view()).to_vector(), want) < 1e-5);

    auto gw = tensor<float, gpu>::full({out, in}, 0.25f), gb = tensor<float, gpu>::full({out}, -1.0f);
    const auto gx = ops::linear_backward(ddy.view(), dx_.view(), dw_.view(), gw.view(), gb.view());
    BOOST_TEST(relative_difference(gx.to_vector(), naive_matmul(dy, w, false, false)) < 1e-5);
    auto want_gw = naive_matmul(dy, x, true, false);
    for (auto& v : want_gw) v += 0.25;  // accumulated onto the prefilled gradient
    BOOST_TEST(relative_difference(gw.to_vector(), want_gw) < 1e-5);
    std::vector<double> want_gb(static_cast<std::size_t>(out), -1.0);
    for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t j = 0; j < out; ++j) want_gb[static_cast<std::size_t>(j)] += dy(r, j);
    BOOST_TEST(relative_difference(gb.to_vector(), want_gb) < 1e-5);
}

BOOST_AUTO_TEST_CASE(batched_products_match_host_loops) {
    const std::int64_t batch = 6, m = 16, n = 24, k = 32;
    const auto a = random_matrix({batch * m, k}, 10), b = random_matrix({batch * n, k}, 11);
    const auto da = on_device(a), dbm = on_device(b);
    auto dc = tensor<float, gpu>::zeros({batch, m, n});
    gemm_kernels<gpu>::gemm_batched(batch, m, n, k, 1.0f, da.data(), k, m * k, false, dbm.data(), k, n * k, true, 0.0f,
                                     dc.data(), n, m * n);
    std::vector<double> want;
    for (std::int64_t i = 0; i < batch; ++i) {
        host_matrix ai{{m, k}, {a.values.begin() + i * m * k, a.values.begin() + (i + 1) * m * k}};
        host_matrix bi{{n, k}, {b.values.begin() + i * n * k, b.values.begin() + (i + 1) * n * k}};
        const auto ci = naive_matmul(ai, bi, false, true);
        want.insert(want.end(), ci.begin(), ci.end());
    }
    BOOST_TEST(relative_difference(dc.to_vector(), want) < 1e-5);
}

BOOST_AUTO_TEST_CASE(philox_draws_equal_the_host_streams) {
    // n = 1001: the last Philox block is partly used; offset 7: the generator's position counts.
    const std::int64_t n = 1001;
    philox_generator gen{.seed = 42, .stream = 3, .offset = 7};
    auto u = tensor<float, gpu>::zeros({n});
    ops::fill_uniform(u.view(), gen, -2.0f, 3.0f);
    auto z = tensor<double, gpu>::zeros({n});
    ops::fill_normal(z.view(), gen, 1.0, 0.5);
    auto b = tensor<float, gpu>::zeros({n});
    ops::fill_bernoulli(b.view(), gen, 0.3, 2.0f);
    BOOST_TEST(gen.offset == 7 + 3 * 251);

    const auto uh = u.to_vector();
    const auto zh = z.to_vector();
    const auto bh = b.to_vector();
    double worst_normal = 0;
    std::int64_t uniform_mismatches = 0, bernoulli_mismatches = 0;
    for (std::int64_t i = 0; i < n; ++i) {
        const auto ui = static_cast<std::uint64_t>(i);
        if (uh[i] != std::fma(5.0f, philox_uniform<float>(42, 3, 7, ui), -2.0f)) ++uniform_mismatches;
        worst_normal = std::max(worst_normal, std::abs(zh[i] - std::fma(0.5, philox_normal<double>(42, 3, 7 + 251, ui), 1.0)));
        if (bh[i] != (philox_uniform<double>(42, 3, 7 + 2 * 251, ui) < 0.3 ? 2.0f : 0.0f)) ++bernoulli_mismatches;
    }
    BOOST_TEST(uniform_mismatches == 0);
    BOOST_TEST(bernoulli_mismatches == 0);
    BOOST_TEST(worst_normal < 1e-14);  // the device's double log/sin/cos may differ in the last bit
}

BOOST_AUTO_TEST_CASE(adamw_and_the_gradient_norm_match_the_host) {
    const std::int64_t n = 5000;
    auto p = random_matrix({n, 1}, 16), g = random_matrix({n, 1}, 17);
    auto dp = on_device(p), dm = tensor<float, gpu>::zeros({n, 1}), dv = tensor<float, gpu>::zeros({n, 1});
    const auto dg = on_device(g);
    const adamw_scalars s{.decay_factor = 0.999, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .step_size = 1e-3 / 0.1,
                          .bias_correction2_sqrt = std::sqrt(0.05)};
    optim_kernels<gpu>::adamw_update(dp.data(), dm.data(), dv.data(), dg.data(), n, s);
    std::vector<double> want(static_cast<std::size_t>(n));
    double squares = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
        const double gi = g.values[i], mi = 0.1 * gi, vi = 0.05 * gi * gi;
        want[i] = p.values[i] * 0.999 - s.step_size * mi / (std::sqrt(vi) / s.bias_correction2_sqrt + 1e-8);
        squares += gi * gi;
    }
    BOOST_TEST(relative_difference(dp.to_vector(), want) < 1e-6);
    BOOST_TEST(optim_kernels<gpu>::sum_of_squares(dg.data(), n) == squares, boost::test_tools::tolerance(1e-12));
    // AdamW and EMA over many tensors in one launch each: bit for bit the single-tensor kernels.
    {
        const std::vector<std::int64_t> lengths{n, 70000};
        std::vector<tensor<float, gpu>> params, moments, squares, grads, params1, moments1, squares1;
        std::vector<adamw_tensor<float>> entries;
        for (std::size_t i = 0; i < lengths.size(); ++i) {
            const auto make = [&](std::uint64_t seed, bool nonnegative) {
                auto h = random_matrix({1, lengths[i]}, seed).values;
                if (nonnegative)
                    for (auto& x : h) x = std::abs(x);
                return tensor<float, gpu>::from_host({lengths[i]}, std::span<const float>(h));
            };
            params.push_back(make(70 + i, false));
            moments.push_back(make(72 + i, false));
            squares.push_back(make(74 + i, true));  // second moments are ≥ 0
            grads.push_back(make(76 + i, false));
            params1.push_back(params.back().clone()), moments1.push_back(moments.back().clone()), squares1.push_back(squares.back().clone());
        }
        for (std::size_t i = 0; i < lengths.size(); ++i)
            entries.push_back({params[i].data(), moments[i].data(), squares[i].data(), grads[i].data(), lengths[i]});
        const adamw_scalars s{0.999, 0.9, 0.95, 1e-8, 1e-3, 0.3};
        optim_kernels<gpu>::adamw_update_many(std::span<const adamw_tensor<float>>(entries), s);
        for (std::size_t i = 0; i < lengths.size(); ++i) {
            optim_kernels<gpu>::adamw_update(params1[i].data(), moments1[i].data(), squares1[i].data(), grads[i].data(), lengths[i], s);
            BOOST_TEST(params[i].to_vector() == params1[i].to_vector(), boost::test_tools::per_element());
            BOOST_TEST(squares[i].to_vector() == squares1[i].to_vector(), boost::test_tools::per_element());
        }
        std::vector<ema_tensor<float>> averaged;
        for (std::size_t i = 0; i < lengths.size(); ++i) averaged.push_back({params1[i].data(), grads[i].data(), lengths[i]});
        const auto before = params1[0].to_vector(), target = grads[0].to_vector();
        optim_kernels<gpu>::ema_update_many(std::span<const ema_tensor<float>>(averaged), 0.25f);
        const auto after = params1[0].to_vector();
        for (std::size_t k = 0; k < after.size(); k += 997) BOOST_TEST(after[k] == before[k] + 0.25f * (target[k] - before[k]), boost::test_tools::tolerance(1e-6f));
    }
    // Many tensors in one launch: bit for bit the host replica's order of summation.
    {
        const std::vector<std::int64_t> lengths{n, 70000, 3};
        std::vector<std::vector<float>> host;
        std::vector<tensor<float, gpu>> device;
        std::vector<const float*> host_pointers, device_pointers;
        for (std::size_t i = 0; i < lengths.size(); ++i) {
            host.push_back(random_matrix({1, lengths[i]}, 60 + i).values);
            device.push_back(tensor<float, gpu>::from_host({lengths[i]}, std::span<const float>(host.back())));
        }
        for (std::size_t i = 0; i < lengths.size(); ++i) {
            host_pointers.push_back(host[i].data());
            device_pointers.push_back(device[i].data());
        }
        const double on_device = optim_kernels<gpu>::sum_of_squares_many(std::span<const float* const>(device_pointers),
                                                                          std::span<const std::int64_t>(lengths));
        BOOST_TEST(on_device == cuda_detail::sum_of_squares_many_on_host(std::span<const float* const>(host_pointers),
                                                                        std::span<const std::int64_t>(lengths)));
    }
}

BOOST_AUTO_TEST_CASE(broadcasts_and_sums_match_host_loops) {
    // DiT's modulation shape: x (B, N, D) against (B, 1, D); sums down to (1, N, 1) and to one value.
    const std::int64_t B = 3, N = 70, D = 20;
    const auto x = random_matrix({B * N, D}, 18), shift = random_matrix({B, D}, 19), scale = random_matrix({B, D}, 20);
    const auto dx_ = tensor<float, gpu>::from_host({B, N, D}, std::span<const float>(x.values));
    const auto dshift = tensor<float, gpu>::from_host({B, 1, D}, std::span<const float>(shift.values));
    const auto dscale = tensor<float, gpu>::from_host({B, 1, D}, std::span<const float>(scale.values));
    std::vector<double> modulated, sums(static_cast<std::size_t>(N), 0.0);
    double total = 0;
    for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t n = 0; n < N; ++n)
            for (std::int64_t d = 0; d < D; ++d) {
                const double v = x.values[static_cast<std::size_t>((b * N + n) * D + d)];
                modulated.push_back(v * (1.0 + scale(b, d)) + shift(b, d));
                sums[static_cast<std::size_t>(n)] += v;
                total += v;
            }
    BOOST_TEST(relative_difference(ops::modulate(dx_.view(), dshift.view(), dscale.view()).to_vector(), modulated) < 1e-6);
    BOOST_TEST(relative_difference(ops::sum_to(dx_.view(), tensor_shape{1, N, 1}).to_vector(), sums) < 1e-6);
    BOOST_TEST(relative_difference(ops::mean(dx_.view()).to_vector(), std::vector<double>{total / double(B * N * D)}) < 1e-6);
}

BOOST_AUTO_TEST_CASE(norms_and_softmax_match_their_jobs_in_double_on_the_host) {
    // The jobs are gradient-checked on the host (test_cuda_functors); here the device runs them,
    // with rows shorter than a block's threads (48) and far longer (a group of 2 × 4000 values).
    const std::int64_t rows = 300, dim = 48;
    const auto x = random_matrix({rows, dim}, 31), dy = random_matrix({rows, dim}, 32), w = random_matrix({1, dim}, 33);
    const std::vector<double> xd(x.values.begin(), x.values.end()), dyd(dy.values.begin(), dy.values.end()),
        wd(w.values.begin(), w.values.end());
    using cuda_detail::reduce_columns_on_host;
    using cuda_detail::reduce_rows_on_host;
    const auto dx_ = on_device(x), ddy = on_device(dy);
    const auto dw_ = tensor<float, gpu>::from_host({dim}, std::span<const float>(w.values));

    std::vector<double> y(xd.size()), mean(rows), rstd(rows), dx(xd.size()), dw(dim, 0.0), db(dim, 0.0);
    reduce_rows_on_host(cuda_detail::layer_norm_forward_job<double>{y.data(), mean.data(), rstd.data(), xd.data(), nullptr, nullptr, dim, 1e-6},
                        rows, dim);
    const auto ln = ops::layer_norm(dx_.view(), 1e-6);
    BOOST_TEST(relative_difference(ln.y.to_vector(), y) < 1e-5);
    reduce_rows_on_host(cuda_detail::layer_norm_backward_job<double>{dx.data(), dyd.data(), xd.data(), mean.data(), rstd.data(), nullptr, dim},
                        rows, dim);
    BOOST_TEST(relative_difference(ops::layer_norm_backward(ddy.view(), dx_.view(), ln.mean.view(), ln.rstd.view()).to_vector(), dx) < 1e-4);
    // The affine gradients, column sums over the 300 rows (two chunks of lanes).
    auto dweight = tensor<float, gpu>::zeros({dim}), dbias = tensor<float, gpu>::zeros({dim});
    norm_kernels<gpu>::layer_norm_backward(static_cast<float*>(nullptr), dweight.data(), dbias.data(), ddy.data(), dx_.data(), ln.mean.data(),
                                           ln.rstd.data(), static_cast<const float*>(nullptr), rows, dim);
    reduce_columns_on_host(cuda_detail::layer_norm_param_grads_job<double>{dw.data(), db.data(), dyd.data(), xd.data(), mean.data(),
                                                                           rstd.data(), dim},
                           rows, dim);
    BOOST_TEST(relative_difference(dweight.to_vector(), dw) < 1e-5);
    BOOST_TEST(relative_difference(dbias.to_vector(), db) < 1e-5);

    reduce_rows_on_host(cuda_detail::rms_norm_forward_job<double>{y.data(), rstd.data(), xd.data(), wd.data(), dim, 1e-6}, rows, dim);
    const auto rn = ops::rms_norm(dx_.view(), dw_.view(), 1e-6);
    BOOST_TEST(relative_difference(rn.y.to_vector(), y) < 1e-5);

    reduce_rows_on_host(cuda_detail::softmax_job<double>{y.data(), xd.data(), dim, 1.0}, rows, dim);
    const auto sm = ops::softmax(dx_.view());
    BOOST_TEST(relative_difference(sm.to_vector(), y) < 1e-5);
    reduce_rows_on_host(cuda_detail::softmax_backward_job<double>{dx.data(), dyd.data(), y.data(), dim, 1.0}, rows, dim);
    BOOST_TEST(relative_difference(ops::softmax_backward(ddy.view(), sm.view()).to_vector(), dx) < 1e-4);

    // Group norm on (N, C, H·W) = (2, 4, 4000) with 2 groups: 8000 values a row.
    const std::int64_t gn = 2 * 4 * 4000;
    const auto xl = random_matrix({gn, 1}, 38);
    const std::vector<double> xld(xl.values.begin(), xl.values.end());
    const auto xg = tensor<float, gpu>::from_host({2, 4, 4000}, std::span<const float>(xl.values));
    std::vector<double> yg(static_cast<std::size_t>(gn)), mg(4), rg(4);
    reduce_rows_on_host(cuda_detail::group_norm_forward_job<double>{yg.data(), mg.data(), rg.data(), xld.data(), nullptr, nullptr, 2, 2, 4000, 1e-6},
                        4, 8000);
    const auto gnorm = ops::group_norm(xg.view(), 2, 1e-6);
    BOOST_TEST(relative_difference(gnorm.y.to_vector(), yg) < 1e-5);
    BOOST_TEST(relative_difference(gnorm.rstd.to_vector(), rg) < 1e-5);
}

BOOST_AUTO_TEST_CASE(loss_terms_match_host_sums) {
    const std::int64_t n = 3 * 8192 + 5;
    const auto x = random_matrix({n, 1}, 34), y = random_matrix({n, 1}, 35);
    const auto dx_ = on_device(x), dy_ = on_device(y);
    auto grad = tensor<float, gpu>::zeros({n, 1});
    double l1 = 0, ve = 0;
    std::vector<double> want_grad(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < want_grad.size(); ++i) {
        const double d = double(y.values[i]) - double(x.values[i]);
        l1 += std::abs(d);
        want_grad[i] = 2.0 * double((d > 0) - (d < 0));
        ve += 1.0 / (std::exp(double(x.values[i])) + 1e-6);
    }
    BOOST_TEST(loss_kernels<gpu>::abs_error(dx_.data(), dy_.data(), grad.data(), n, 2.0) == l1, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(relative_difference(grad.to_vector(), want_grad) == 0.0);
    BOOST_TEST(loss_kernels<gpu>::inverse_variance(dx_.data(), 1e-6, static_cast<float*>(nullptr), n, 1.0) == ve,
               boost::test_tools::tolerance(1e-12));
    auto with_nan = on_device(x);
    const float bad[2] = {NAN, INFINITY};
    // On vediff's stream, which the kernels below run on: a plain cudaMemcpy (the legacy default
    // stream) would not be ordered with them.
    cuda_detail::check(cudaMemcpyAsync(with_nan.data() + 10, bad, sizeof(bad), cudaMemcpyHostToDevice, cuda_stream()), "cudaMemcpyAsync");
    cuda_synchronize();  // `bad` is on this stack frame
    BOOST_TEST(loss_kernels<gpu>::count_nonfinite(with_nan.data(), n) == 2);
    std::vector<double> mean(2), m2(2);
    loss_kernels<gpu>::channel_moments(mean.data(), m2.data(), dx_.data(), 1, 1, n);
    double mu = 0, q = 0;
    for (float v : x.values) mu += v / double(n);
    for (float v : x.values) q += (v - mu) * (v - mu);
    BOOST_TEST(mean[0] == mu, boost::test_tools::tolerance(1e-10));
    BOOST_TEST(m2[0] == q, boost::test_tools::tolerance(1e-10));
    // Two channels of (B, C, S) = (3, 2, 4000): each channel's values interleave with the other's.
    const std::int64_t B = 3, C = 2, S = 4000;
    loss_kernels<gpu>::channel_moments(mean.data(), m2.data(), dx_.data(), B, C, S);
    for (std::int64_t c = 0; c < C; ++c) {
        double cm = 0, cq = 0;
        for (std::int64_t b = 0; b < B; ++b)
            for (std::int64_t j = 0; j < S; ++j) cm += x.values[static_cast<std::size_t>((b * C + c) * S + j)] / double(B * S);
        for (std::int64_t b = 0; b < B; ++b)
            for (std::int64_t j = 0; j < S; ++j) cq += std::pow(x.values[static_cast<std::size_t>((b * C + c) * S + j)] - cm, 2);
        BOOST_TEST(mean[static_cast<std::size_t>(c)] == cm, boost::test_tools::tolerance(1e-10));
        BOOST_TEST(m2[static_cast<std::size_t>(c)] == cq, boost::test_tools::tolerance(1e-10));
    }
}

BOOST_AUTO_TEST_CASE(posterior_split_and_sample_match_host_formulas) {
    const std::int64_t outer = 4, inner = 50;
    const auto moments = random_matrix({outer, 2 * inner}, 36), eps = random_matrix({outer, inner}, 37);
    const auto dmom = on_device(moments), deps = on_device(eps);
    auto mean = tensor<float, gpu>::zeros({outer, inner}), logvar = mean.clone(), raw = mean.clone(), z = mean.clone();
    posterior_kernels<gpu>::split(mean.data(), logvar.data(), raw.data(), dmom.data(), outer, inner, -0.5f, 0.5f);
    posterior_kernels<gpu>::sample(z.data(), mean.data(), logvar.data(), deps.data(), outer * inner);
    std::vector<double> want_logvar, want_z;
    for (std::int64_t b = 0; b < outer; ++b)
        for (std::int64_t k = 0; k < inner; ++k) {
            const double m = moments(b, k), lv = std::min(std::max(double(moments(b, inner + k)), -0.5), 0.5);
            want_logvar.push_back(lv);
            want_z.push_back(m + std::exp(0.5 * lv) * eps(b, k));
        }
    BOOST_TEST(relative_difference(logvar.to_vector(), want_logvar) == 0.0);
    BOOST_TEST(relative_difference(z.to_vector(), want_z) < 1e-6);
}

BOOST_AUTO_TEST_CASE(layout_kernels_round_trip_and_check_indices) {
    const std::int64_t B = 2, C = 4, H = 8, W = 8, p = 2;
    const auto image = random_matrix({B * C * H, W}, 38);
    const auto dimage = tensor<float, gpu>::from_host({B, C, H, W}, std::span<const float>(image.values));
    auto tokens = tensor<float, gpu>::zeros({B, (H / p) * (W / p), p * p * C}), back = tensor<float, gpu>::zeros({B, C, H, W});
    patchify_kernels<gpu>::patchify(tokens.data(), dimage.data(), B, C, H, W, p);
    patchify_kernels<gpu>::unpatchify(back.data(), tokens.data(), B, C, H, W, p);
    BOOST_TEST(back.to_vector() == image.values, boost::test_tools::per_element());
    const std::vector<std::int32_t> labels = {3, 1, 7, 2};
    const auto dlabels = tensor<std::int32_t, gpu>::from_host({4}, std::span<const std::int32_t>(labels));
    BOOST_TEST(embedding_kernels<gpu>::first_invalid(dlabels.data(), 4, 8) == -1);
    BOOST_TEST(embedding_kernels<gpu>::first_invalid(dlabels.data(), 4, 5) == 2);
    BOOST_TEST(embedding_kernels<gpu>::index_at(dlabels.data(), 2) == 7);
}

// A label outside the table does not stop the host at the lookup: the error comes at the next
// read from the device, naming the label and its position, and the lookup read nothing outside
// the table (its row is zero). Then the slots are free: the next read throws nothing.
BOOST_AUTO_TEST_CASE(an_index_outside_the_table_is_reported_at_the_next_read) {
    const std::vector<std::int32_t> labels = {3, 1, 7, 2};
    const auto dlabels = tensor<std::int32_t, gpu>::from_host({4}, std::span<const std::int32_t>(labels));
    const auto table = tensor<float, gpu>::full({5, 3}, 1.0f);
    tensor<float, gpu> rows;
    BOOST_CHECK_NO_THROW(rows = ops::embedding(table.view(), dlabels.view()));
    std::vector<float> host;
    BOOST_CHECK_EXCEPTION(host = rows.to_vector(), shape_error, [](const shape_error& e) {
        BOOST_TEST_MESSAGE(e.what());
        return std::string(e.what()).find("embedding: index 7 at position 2 of 4 is outside [0, 5)") != std::string::npos;
    });
    host = rows.to_vector();
    BOOST_TEST(host == (std::vector<float>{1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1}), boost::test_tools::per_element());
    const auto good = tensor<std::int32_t, gpu>::from_host({2}, std::span<const std::int32_t>(std::vector<std::int32_t>{0, 4}));
    (void)ops::embedding(table.view(), good.view());
    BOOST_CHECK_NO_THROW(cuda_synchronize());
}

BOOST_AUTO_TEST_CASE(cross_entropy_and_timestep_embedding_on_the_device) {
    const std::int64_t B = 64, K = 10;
    const auto logits = random_matrix({B, K}, 39);
    std::vector<std::int32_t> labels(static_cast<std::size_t>(B));
    for (std::int64_t i = 0; i < B; ++i) labels[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i % K);
    const auto dlogits = on_device(logits);
    const auto dlabels = tensor<std::int32_t, gpu>::from_host({B}, std::span<const std::int32_t>(labels));
    auto loss = tensor<float, gpu>::zeros({1});
    cross_entropy_kernels<gpu>::forward(loss.data(), dlogits.data(), dlabels.data(), B, K);
    double want = 0;
    for (std::int64_t i = 0; i < B; ++i) {
        double s = 0;
        for (std::int64_t k = 0; k < K; ++k) s += std::exp(double(logits(i, k)));
        want += (std::log(s) - logits(i, labels[static_cast<std::size_t>(i)])) / double(B);
    }
    BOOST_TEST(relative_difference(loss.to_vector(), std::vector<double>{want}) < 1e-6);
    auto predicted = tensor<std::int32_t, gpu>::zeros({B});
    cross_entropy_kernels<gpu>::argmax(predicted.data(), dlogits.data(), B, K);
    std::int64_t agree = 0;
    const auto host_predicted = predicted.to_vector();
    for (std::int64_t i = 0; i < B; ++i) {
        std::int64_t best = 0;
        for (std::int64_t k = 1; k < K; ++k)
            if (logits(i, k) > logits(i, best)) best = k;
        BOOST_TEST(host_predicted[static_cast<std::size_t>(i)] == best);
        agree += best == labels[static_cast<std::size_t>(i)];
    }
    BOOST_TEST(cross_entropy_kernels<gpu>::count_equal(predicted.data(), dlabels.data(), B) == agree);
    const std::vector<float> t = {0.0f, 0.5f, 900.0f};
    const auto dt = tensor<float, gpu>::from_host({3}, std::span<const float>(t));
    auto emb = tensor<float, gpu>::zeros({3, 8});
    positional_kernels<gpu>::timestep_embedding(emb.data(), dt.data(), 3, 4, 10000.0);
    const auto e = emb.to_vector();
    BOOST_TEST(e[0] == 1.0f);  // cos(0)
    BOOST_TEST(e[4] == 0.0f);  // sin(0)
    BOOST_TEST(std::abs(e[8 + 1] - std::cos(0.5 * std::exp(-std::log(10000.0) / 4))) < 1e-6);
}

BOOST_AUTO_TEST_CASE(packed_attention_matches_a_host_loop_forward_and_backward) {
    // DiT's packed qkv (B, N, 3·D), heads of 16; the reference is softmax(q·kᵀ/√hd)·v written out,
    // and the backward is checked through ⟨dqkv, e⟩ against central differences of ⟨out, dout⟩.
    const std::int64_t B = 2, N = 9, heads = 3, hd = 16, D = heads * hd;
    const auto qkv = random_matrix({B * N, 3 * D}, 40), dout = random_matrix({B * N, D}, 41);
    const auto host_attention = [&](const std::vector<float>& x) {
        std::vector<double> out(static_cast<std::size_t>(B * N * D), 0.0);
        for (std::int64_t b = 0; b < B; ++b)
            for (std::int64_t h = 0; h < heads; ++h)
                for (std::int64_t i = 0; i < N; ++i) {
                    std::vector<double> s(static_cast<std::size_t>(N));
                    double m = -1e300, z = 0;
                    for (std::int64_t j = 0; j < N; ++j) {
                        double d = 0;
                        for (std::int64_t c = 0; c < hd; ++c)
                            d += double(x[static_cast<std::size_t>((b * N + i) * 3 * D + h * hd + c)]) *
                                 double(x[static_cast<std::size_t>((b * N + j) * 3 * D + D + h * hd + c)]);
                        s[static_cast<std::size_t>(j)] = d / std::sqrt(double(hd));
                        m = std::max(m, s[static_cast<std::size_t>(j)]);
                    }
                    for (auto& e : s) z += (e = std::exp(e - m));
                    for (std::int64_t j = 0; j < N; ++j)
                        for (std::int64_t c = 0; c < hd; ++c)
                            out[static_cast<std::size_t>((b * N + i) * D + h * hd + c)] +=
                                s[static_cast<std::size_t>(j)] / z * double(x[static_cast<std::size_t>((b * N + j) * 3 * D + 2 * D + h * hd + c)]);
                }
        return out;
    };
    const auto dqkv_in = tensor<float, gpu>::from_host({B, N, 3 * D}, std::span<const float>(qkv.values));
    const auto ddout = tensor<float, gpu>::from_host({B, N, D}, std::span<const float>(dout.values));
    // Directional derivative along a random direction e, in double on the host.
    const auto e = random_matrix({B * N, 3 * D}, 42);
    const double h = 1e-3;
    std::vector<float> plus = qkv.values, minus = qkv.values;
    for (std::size_t i = 0; i < plus.size(); ++i) {
        plus[i] += float(h * e.values[i]);
        minus[i] -= float(h * e.values[i]);
    }
    const auto op = host_attention(plus), om = host_attention(minus);
    double fd = 0;
    for (std::size_t i = 0; i < op.size(); ++i) fd += (op[i] - om[i]) / (2 * h) * dout.values[i];
    // Both of attention's paths: the fused kernels and cuBLAS's products.
    for (const auto path : {cuda_attention_path::fused, cuda_attention_path::unfused}) {
        BOOST_TEST_CONTEXT((path == cuda_attention_path::fused ? "fused" : "unfused")) {
            set_cuda_attention_path(path);
            const auto r = ops::packed_attention(dqkv_in.view(), heads);
            BOOST_TEST(relative_difference(r.out.to_vector(), host_attention(qkv.values)) < 1e-5);
            BOOST_TEST(relative_difference(ops::packed_attention_output(dqkv_in.view(), heads).to_vector(), host_attention(qkv.values)) <
                       1e-5);
            const auto grad = ops::packed_attention_backward(ddout.view(), dqkv_in.view(), r.saved, heads).to_vector();
            double analytic = 0;
            for (std::size_t i = 0; i < grad.size(); ++i) analytic += double(grad[i]) * e.values[i];
            BOOST_TEST(analytic == fd, boost::test_tools::tolerance(1e-3));
        }
    }
    set_cuda_attention_path(cuda_attention_path::automatic);
}

BOOST_AUTO_TEST_CASE(bf16_mixed_products_round_their_operands_and_sum_in_fp32) {
    // Against fp64 loops on the bf16-rounded operands (vediff::bfloat16, round to nearest even:
    // the same rounding as __float2bfloat16_rn): within fp32 summation error, so both the rounding
    // and fp32 accumulation are required; and against the unrounded operands, not within it.
    const auto rounded = [](host_matrix m) {
        for (auto& v : m.values) v = static_cast<float>(bfloat16(v));
        return m;
    };
    for (int t = 0; t < 4; ++t) {
        const bool ta = t & 1, tb = t & 2;
        BOOST_TEST_CONTEXT("transpose a " << ta << ", transpose b " << tb) {
            const std::int64_t m = 67, n = 45, k = 131;
            const auto a = random_matrix(ta ? tensor_shape{k, m} : tensor_shape{m, k}, 14);
            const auto b = random_matrix(tb ? tensor_shape{n, k} : tensor_shape{k, n}, 15);
            const auto got = ops::matmul<bf16_mixed>(on_device(a).view(), on_device(b).view(), ta, tb).to_vector();
            BOOST_TEST(relative_difference(got, naive_matmul(rounded(a), rounded(b), ta, tb)) < 1e-5);
            BOOST_TEST(relative_difference(got, naive_matmul(a, b, ta, tb)) > 1e-4);
        }
    }
    // A Linear with bias, forward and the two backward products.
    const std::int64_t rows = 70, in = 40, out = 24;
    const auto x = random_matrix({rows, in}, 16), w = random_matrix({out, in}, 17), bias = random_matrix({1, out}, 18);
    const auto dy = random_matrix({rows, out}, 19);
    const auto db_ = tensor<float, gpu>::from_host({out}, std::span<const float>(bias.values));
    auto want = naive_matmul(rounded(x), rounded(w), false, true);
    for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t j = 0; j < out; ++j) want[static_cast<std::size_t>(r * out + j)] += bias.values[static_cast<std::size_t>(j)];
    BOOST_TEST(relative_difference(ops::linear<bf16_mixed>(on_device(x).view(), on_device(w).view(), db_.view()).to_vector(), want) < 1e-5);
    auto gw = tensor<float, gpu>::zeros({out, in}), gb = tensor<float, gpu>::zeros({out});
    const auto gx = ops::linear_backward<bf16_mixed>(on_device(dy).view(), on_device(x).view(), on_device(w).view(), gw.view(), gb.view());
    BOOST_TEST(relative_difference(gx.to_vector(), naive_matmul(rounded(dy), rounded(w), false, false)) < 1e-5);
    BOOST_TEST(relative_difference(gw.to_vector(), naive_matmul(rounded(dy), rounded(x), true, false)) < 1e-5);
}

BOOST_AUTO_TEST_CASE(bf16_mixed_packed_attention_stays_within_bf16_error) {
    // Against fp32 attention on the device: within bf16's error and not at fp32's agreement.
    const std::int64_t B = 2, N = 20, heads = 2, hd = 16, D = heads * hd;
    const auto qkv = random_matrix({B * N, 3 * D}, 50), dout = random_matrix({B * N, D}, 51);
    const auto dqkv_in = tensor<float, gpu>::from_host({B, N, 3 * D}, std::span<const float>(qkv.values));
    const auto ddout = tensor<float, gpu>::from_host({B, N, D}, std::span<const float>(dout.values));
    const auto exact = ops::packed_attention(dqkv_in.view(), heads);
    const auto mixed = ops::packed_attention<bf16_mixed>(dqkv_in.view(), heads);
    const auto g_exact = ops::packed_attention_backward(ddout.view(), dqkv_in.view(), exact.saved, heads).to_vector();
    const auto g_mixed = ops::packed_attention_backward<bf16_mixed>(ddout.view(), dqkv_in.view(), mixed.saved, heads).to_vector();
    const auto as_double = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
    const double out_diff = relative_difference(mixed.out.to_vector(), as_double(exact.out.to_vector()));
    const double grad_diff = relative_difference(g_mixed, as_double(g_exact));
    BOOST_TEST_MESSAGE("cuda attention bf16 vs fp32: out " << out_diff << ", grads " << grad_diff);
    BOOST_TEST(out_diff < 0.02);
    BOOST_TEST(grad_diff < 0.04);
    BOOST_TEST(out_diff > 1e-4);
}

// The fused kernels on the device against the unfused cuBLAS path (both precisions) and against
// their own steps run on the host; the fused forward and backward never hold a (B, H, N, N)
// tensor: their peak of live bytes stays below one (the unfused path's exceeds it).
BOOST_AUTO_TEST_CASE(fused_attention_matches_the_unfused_path_and_its_host_steps) {
    const std::int64_t B = 2, N = 600, heads = 2, hd = 64, D = heads * hd;
    const auto qkv = random_matrix({B * N, 3 * D}, 52), dout = random_matrix({B * N, D}, 53);
    const auto dqkv_in = tensor<float, gpu>::from_host({B, N, 3 * D}, std::span<const float>(qkv.values));
    const auto ddout = tensor<float, gpu>::from_host({B, N, D}, std::span<const float>(dout.values));
    const auto as_double = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
    const std::size_t scores_bytes = static_cast<std::size_t>(B * heads * N * N) * sizeof(float);
    const auto run = [&]<class P>(P, bool fused, std::size_t& peak) {
        set_cuda_attention_path(fused ? cuda_attention_path::fused : cuda_attention_path::unfused);
        cuda_synchronize();
        memory<gpu>::reset_peak();
        const std::size_t before = memory<gpu>::stats().live;
        auto r = ops::packed_attention<P>(dqkv_in.view(), heads);
        auto g = ops::packed_attention_backward<P>(ddout.view(), dqkv_in.view(), r.saved, heads);
        peak = memory<gpu>::stats().peak_live - before;
        set_cuda_attention_path(cuda_attention_path::automatic);
        return std::pair{r.out.to_vector(), g.to_vector()};
    };
    std::size_t fused_peak = 0, unfused_peak = 0;
    const auto fused = run(fp32{}, true, fused_peak), unfused = run(fp32{}, false, unfused_peak);
    BOOST_TEST_MESSAGE("attention peak bytes: fused " << fused_peak << ", unfused " << unfused_peak << ", one score tensor " << scores_bytes);
    BOOST_TEST(relative_difference(fused.first, as_double(unfused.first)) < 1e-5);
    BOOST_TEST(relative_difference(fused.second, as_double(unfused.second)) < 1e-4);
    BOOST_TEST(fused_peak < scores_bytes);
    BOOST_TEST(unfused_peak >= scores_bytes);
    std::size_t ignored = 0;
    const auto fused16 = run(bf16_mixed{}, true, ignored), unfused16 = run(bf16_mixed{}, false, ignored);
    BOOST_TEST(relative_difference(fused16.first, as_double(unfused16.first)) < 0.02);
    BOOST_TEST(relative_difference(fused16.second, as_double(unfused16.second)) < 0.04);
    // The device kernel against its steps run on the host: the same arithmetic, up to the
    // device's expf/logf against the host's.
    const auto l = ops::detail::packed_layout("fused attention test", dqkv_in.view(), heads);
    std::vector<float> host_out(static_cast<std::size_t>(B * N * D)), log_sum(static_cast<std::size_t>(B * heads * N));
    cuda_detail::fused_attention_forward_run<false>(cuda_detail::fused_rows_on_host{}, host_out.data(), log_sum.data(), qkv.values.data(),
                                                    qkv.values.data() + D, qkv.values.data() + 2 * D, l, float(1.0 / std::sqrt(double(hd))),
                                                    false);
    BOOST_TEST(relative_difference(fused.first, as_double(host_out)) < 1e-6);
}

BOOST_AUTO_TEST_CASE(conv2d_matches_a_host_loop_forward_and_backward) {
    // x (2, 3, 9, 8), w (4, 3, 3, 3), stride 2, padding 1, bias; the backward through directional
    // derivatives of ⟨conv(x, w) + b, dy⟩ along random directions of x and of w.
    const std::int64_t N = 2, Cin = 3, H = 9, W = 8, Cout = 4;
    const auto x = random_matrix({N * Cin * H, W}, 43), w = random_matrix({Cout * Cin * 9, 1}, 44), b = random_matrix({Cout, 1}, 45);
    const ops::conv2d_options opt{.stride = 2, .padding = ops::padding2d::symmetric(1)};
    const auto host_conv = [&](const std::vector<float>& xv, const std::vector<float>& wv) {
        const std::int64_t Ho = (H + 2 - 3) / 2 + 1, Wo = (W + 2 - 3) / 2 + 1;
        std::vector<double> y(static_cast<std::size_t>(N * Cout * Ho * Wo));
        for (std::int64_t n = 0; n < N; ++n)
            for (std::int64_t co = 0; co < Cout; ++co)
                for (std::int64_t oy = 0; oy < Ho; ++oy)
                    for (std::int64_t ox = 0; ox < Wo; ++ox) {
                        double s = b.values[static_cast<std::size_t>(co)];
                        for (std::int64_t c = 0; c < Cin; ++c)
                            for (std::int64_t i = 0; i < 3; ++i)
                                for (std::int64_t j = 0; j < 3; ++j) {
                                    const std::int64_t yy = oy * 2 - 1 + i, xx = ox * 2 - 1 + j;
                                    if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                                    s += double(wv[static_cast<std::size_t>(((co * Cin + c) * 3 + i) * 3 + j)]) *
                                         double(xv[static_cast<std::size_t>(((n * Cin + c) * H + yy) * W + xx)]);
                                }
                        y[static_cast<std::size_t>(((n * Cout + co) * Ho + oy) * Wo + ox)] = s;
                    }
        return y;
    };
    const auto dx_ = tensor<float, gpu>::from_host({N, Cin, H, W}, std::span<const float>(x.values));
    const auto dw_ = tensor<float, gpu>::from_host({Cout, Cin, 3, 3}, std::span<const float>(w.values));
    const auto db_ = tensor<float, gpu>::from_host({Cout}, std::span<const float>(b.values));
    const auto y = ops::conv2d(dx_.view(), dw_.view(), db_.view(), opt);
    const auto want = host_conv(x.values, w.values);
    BOOST_TEST(relative_difference(y.to_vector(), want) < 1e-5);
    const auto dy = random_matrix({static_cast<std::int64_t>(want.size()), 1}, 46);
    const auto ddy = tensor<float, gpu>::from_host(y.shape(), std::span<const float>(dy.values));
    auto gw = tensor<float, gpu>::zeros({Cout, Cin, 3, 3}), gb = tensor<float, gpu>::zeros({Cout});
    const auto gx = ops::conv2d_backward(ddy.view(), dx_.view(), dw_.view(), gw.view(), gb.view(), opt).to_vector();
    const auto directional = [&](const std::vector<float>& grad, bool along_x, std::uint64_t seed) {
        const auto e = random_matrix({static_cast<std::int64_t>(grad.size()), 1}, seed);
        auto xp = x.values, xm = x.values, wp = w.values, wm = w.values;
        auto& p = along_x ? xp : wp;
        auto& m = along_x ? xm : wm;
        const double h = 1e-2;
        for (std::size_t i = 0; i < p.size(); ++i) {
            p[i] += float(h * e.values[i]);
            m[i] -= float(h * e.values[i]);
        }
        const auto yp = host_conv(xp, wp), ym = host_conv(xm, wm);
        double fd = 0, analytic = 0;
        for (std::size_t i = 0; i < yp.size(); ++i) fd += (yp[i] - ym[i]) / (2 * h) * dy.values[i];
        for (std::size_t i = 0; i < grad.size(); ++i) analytic += double(grad[i]) * e.values[i];
        return std::abs(analytic - fd) / std::max(1.0, std::abs(fd));
    };
    BOOST_TEST(directional(gx, true, 47) < 1e-4);
    BOOST_TEST(directional(gw.to_vector(), false, 48) < 1e-4);
    std::vector<double> want_gb(static_cast<std::size_t>(Cout), 0.0);
    const std::size_t plane = want.size() / static_cast<std::size_t>(N * Cout);
    for (std::size_t i = 0; i < want.size(); ++i) want_gb[(i / plane) % static_cast<std::size_t>(Cout)] += dy.values[i];
    BOOST_TEST(relative_difference(gb.to_vector(), want_gb) < 1e-5);
}

namespace {

/// One convolution of the path tests: sizes, stride and padding (top, bottom, left, right).
struct conv_case {
    const char* name;
    std::int64_t batch, in_channels, h, w, out_channels, kernel, stride;
    ops::padding2d padding;
};

// Every path: the 1×1 GEMM (several images and one), cuDNN with symmetric padding, with LDM's
// asymmetric stride-2 padding and a top-heavy one (explicit padded copy), a strided 1×1 (cuDNN).
const conv_case conv_cases[] = {
    {"1x1", 2, 5, 6, 7, 4, 1, 1, {}},
    {"1x1, one image", 1, 5, 6, 7, 4, 1, 1, {}},
    {"3x3 padding 1", 2, 3, 9, 8, 4, 3, 1, ops::padding2d::symmetric(1)},
    {"LDM downsample: 3x3 stride 2 padding (0, 1, 0, 1)", 2, 3, 9, 8, 4, 3, 2, {0, 1, 0, 1}},
    {"3x3 padding (2, 1, 0, 3)", 2, 2, 6, 5, 3, 3, 1, {2, 1, 0, 3}},
    {"1x1 stride 2", 2, 3, 7, 6, 4, 1, 2, {}},
};

/// The convolution written out in double: forward, and the gradients for a given dy.
struct written_out_conv {
    conv2d_geometry g;

    /// f(x index, w index, y index) for every product term of the convolution.
    template <class F>
    void for_each_term(F f) const {
        for (std::int64_t n = 0; n < g.batch; ++n)
            for (std::int64_t co = 0; co < g.out_channels; ++co)
                for (std::int64_t oy = 0; oy < g.out_h; ++oy)
                    for (std::int64_t ox = 0; ox < g.out_w; ++ox)
                        for (std::int64_t c = 0; c < g.in_channels; ++c)
                            for (std::int64_t i = 0; i < g.kernel_h; ++i)
                                for (std::int64_t j = 0; j < g.kernel_w; ++j) {
                                    const std::int64_t yy = oy * g.stride_h - g.pad_top + i, xx = ox * g.stride_w - g.pad_left + j;
                                    if (yy < 0 || yy >= g.in_h || xx < 0 || xx >= g.in_w) continue;
                                    f(static_cast<std::size_t>(((n * g.in_channels + c) * g.in_h + yy) * g.in_w + xx),
                                      static_cast<std::size_t>(((co * g.in_channels + c) * g.kernel_h + i) * g.kernel_w + j),
                                      static_cast<std::size_t>(((n * g.out_channels + co) * g.out_h + oy) * g.out_w + ox));
                                }
    }
    std::vector<double> forward(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& bias) const {
        std::vector<double> y(static_cast<std::size_t>(g.batch * g.out_channels * g.out_plane()), 0.0);
        if (!bias.empty())
            for (std::size_t e = 0; e < y.size(); ++e) y[e] = bias[e / static_cast<std::size_t>(g.out_plane()) % static_cast<std::size_t>(g.out_channels)];
        for_each_term([&](std::size_t xi, std::size_t wi, std::size_t yi) { y[yi] += w[wi] * x[xi]; });
        return y;
    }
    struct gradients {
        std::vector<double> dx, dw, db;
    };
    gradients backward(const std::vector<double>& dy, const std::vector<double>& x, const std::vector<double>& w) const {
        gradients out{std::vector<double>(x.size(), 0.0), std::vector<double>(w.size(), 0.0),
                      std::vector<double>(static_cast<std::size_t>(g.out_channels), 0.0)};
        for_each_term([&](std::size_t xi, std::size_t wi, std::size_t yi) {
            out.dx[xi] += w[wi] * dy[yi];
            out.dw[wi] += x[xi] * dy[yi];
        });
        for (std::size_t e = 0; e < dy.size(); ++e) out.db[e / static_cast<std::size_t>(g.out_plane()) % static_cast<std::size_t>(g.out_channels)] += dy[e];
        return out;
    }
};

std::vector<double> plus(std::vector<double> a, const std::vector<double>& b, double times = 1.0) {
    for (std::size_t i = 0; i < a.size(); ++i) a[i] += times * b[i];
    return a;
}

template <class T>
double conv_difference(const tensor<T, gpu>& got, const std::vector<double>& want) {
    const auto values = got.to_vector();
    return relative_difference(std::vector<float>(values.begin(), values.end()), want);
}

/// Largest |got − want| relative to want's largest magnitude, in double.
double relative_difference_double(const std::vector<double>& got, const std::vector<double>& want) {
    BOOST_REQUIRE_EQUAL(got.size(), want.size());
    double worst = 0, scale = 1e-300;
    for (std::size_t i = 0; i < got.size(); ++i) {
        worst = std::max(worst, std::abs(got[i] - want[i]));
        scale = std::max(scale, std::abs(want[i]));
    }
    return worst / scale;
}

template <class T>
double difference(const tensor<T, gpu>& got, const std::vector<double>& want) {
    if constexpr (std::is_same_v<T, double>) return relative_difference_double(got.to_vector(), want);
    else return conv_difference(got, want);
}

/// Values the operands of a P product see: bf16-rounded under bf16_mixed, else themselves.
template <class P>
std::vector<double> as_product_operand(std::vector<double> v) {
    if constexpr (P::rounds_operands)
        for (auto& e : v) e = static_cast<double>(static_cast<float>(bfloat16(static_cast<float>(e))));
    return v;
}

/// One case under precision P with element type T: the forward against the written-out conv, the
/// backward's dx, and dw and db accumulated onto non-zero values; then again with dx null (dw and
/// db accumulate a second time) and with dw and db null (dx alone).
template <class P, class T>
void check_conv_case(const conv_case& c, bool with_bias, double tolerance) {
    const auto values = [](std::int64_t n, std::uint64_t seed) {
        std::vector<T> v(static_cast<std::size_t>(n));
        for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<T>(philox_normal<double>(seed, 0, 0, i));
        return v;
    };
    const auto as_double = [](const std::vector<T>& v) { return std::vector<double>(v.begin(), v.end()); };
    const ops::conv2d_options options{.stride = c.stride, .padding = c.padding};
    const auto x_host = values(c.batch * c.in_channels * c.h * c.w, 90), w_host = values(c.out_channels * c.in_channels * c.kernel * c.kernel, 91);
    const auto bias_host = values(c.out_channels, 92), dw_start = values(c.out_channels * c.in_channels * c.kernel * c.kernel, 93),
               db_start = values(c.out_channels, 94);
    const auto x = tensor<T, gpu>::from_host({c.batch, c.in_channels, c.h, c.w}, std::span<const T>(x_host));
    const auto w = tensor<T, gpu>::from_host({c.out_channels, c.in_channels, c.kernel, c.kernel}, std::span<const T>(w_host));
    const auto bias = with_bias ? tensor<T, gpu>::from_host({c.out_channels}, std::span<const T>(bias_host)) : tensor<T, gpu>{};
    const conv2d_geometry g = ops::conv2d_check("check_conv_case", x.view(), w.view(), bias.view(), options);
    BOOST_TEST_MESSAGE(c.name << ": path " << int(cuda_detail::choose_conv_path(g, P::rounds_operands)));
    const written_out_conv reference{g};
    const auto x_operand = as_product_operand<P>(as_double(x_host)), w_operand = as_product_operand<P>(as_double(w_host));

    const auto y = ops::conv2d<P>(x.view(), w.view(), bias.view(), options);
    BOOST_TEST(difference(y, reference.forward(x_operand, w_operand, with_bias ? as_double(bias_host) : std::vector<double>{})) < tolerance);

    const auto dy_host = values(y.numel(), 95);
    const auto dy = tensor<T, gpu>::from_host(y.shape(), std::span<const T>(dy_host));
    const auto want = reference.backward(as_product_operand<P>(as_double(dy_host)), x_operand, w_operand);
    const auto want_db = reference.backward(as_double(dy_host), x_operand, w_operand).db;  // fp32 sums of dy, unrounded
    auto dx = tensor<T, gpu>::full(x.shape(), T(-7));
    auto dw = tensor<T, gpu>::from_host(w.shape(), std::span<const T>(dw_start));
    auto db = tensor<T, gpu>::from_host({c.out_channels}, std::span<const T>(db_start));
    T* const db_or_null = with_bias ? db.data() : nullptr;
    conv_kernels<gpu>::conv2d_backward<P>(dx.data(), dw.data(), db_or_null, dy.data(), x.data(), w.data(), g);
    BOOST_TEST(difference(dx, want.dx) < tolerance);
    BOOST_TEST(difference(dw, plus(as_double(dw_start), want.dw)) < tolerance);
    const auto db_expected = with_bias ? plus(as_double(db_start), want_db) : as_double(db_start);
    BOOST_TEST(difference(db, db_expected) < tolerance);

    conv_kernels<gpu>::conv2d_backward<P>(static_cast<T*>(nullptr), dw.data(), db_or_null, dy.data(), x.data(), w.data(), g);
    BOOST_TEST(difference(dw, plus(as_double(dw_start), want.dw, 2.0)) < tolerance);
    if (with_bias) BOOST_TEST(difference(db, plus(as_double(db_start), want_db, 2.0)) < tolerance);

    auto dx_alone = tensor<T, gpu>::full(x.shape(), T(-7));
    conv_kernels<gpu>::conv2d_backward<P>(dx_alone.data(), static_cast<T*>(nullptr), static_cast<T*>(nullptr), dy.data(), x.data(), w.data(), g);
    BOOST_TEST(difference(dx_alone, want.dx) < tolerance);
}

} // namespace

BOOST_AUTO_TEST_CASE(conv2d_paths_match_the_written_out_convolution_in_fp32) {
    // TF32 is off (main), so fp32 agreement is required of cuDNN and the GEMMs.
    for (const auto& c : conv_cases)
        for (const bool with_bias : {true, false})
            BOOST_TEST_CONTEXT(c.name << (with_bias ? ", bias" : ", no bias")) { check_conv_case<fp32, float>(c, with_bias, 1e-5); }
}

BOOST_AUTO_TEST_CASE(conv2d_paths_match_the_written_out_convolution_in_double) {
    for (const auto& c : conv_cases)
        BOOST_TEST_CONTEXT(c.name) { check_conv_case<fp32, double>(c, true, 1e-12); }
}

BOOST_AUTO_TEST_CASE(conv2d_bf16_mixed_rounds_the_operands_and_sums_in_fp32) {
    // Against the written-out conv of the bf16-rounded operands: the 1×1 GEMM and im2col paths.
    for (const auto& c : conv_cases)
        for (const bool with_bias : {true, false})
            BOOST_TEST_CONTEXT(c.name << (with_bias ? ", bias" : ", no bias")) { check_conv_case<bf16_mixed, float>(c, with_bias, 1e-5); }
}

BOOST_AUTO_TEST_CASE(conv2d_with_tf32_stays_within_tf32_error) {
    set_cuda_conv_tf32(true);
    try {
        for (const auto& c : conv_cases)
            BOOST_TEST_CONTEXT(c.name) { check_conv_case<fp32, float>(c, true, 1e-2); }
    } catch (...) {
        set_cuda_conv_tf32(false);
        throw;
    }
    set_cuda_conv_tf32(false);
}

BOOST_AUTO_TEST_CASE(a_repeated_conv_step_reuses_its_algorithms_and_memory) {
    // The LDM downsample (cuDNN with a padded copy) and a 1×1 (per-image products summed): the
    // second step asks the heuristics nothing and allocates nothing.
    const auto shaped = [](const tensor_shape& shape, std::uint64_t seed) {
        return tensor<float, gpu>::from_host(shape, std::span<const float>(random_matrix({shape.numel(), 1}, seed).values));
    };
    const auto x = shaped({2, 8, 16, 16}, 96), w3 = shaped({8, 8, 3, 3}, 97), w1 = shaped({8, 8, 1, 1}, 98), b = shaped({8}, 99);
    auto gw3 = tensor<float, gpu>::zeros({8, 8, 3, 3}), gw1 = tensor<float, gpu>::zeros({8, 8, 1, 1}), gb = tensor<float, gpu>::zeros({8});
    const ops::conv2d_options downsample{.stride = 2, .padding = {0, 1, 0, 1}};
    const auto step = [&] {
        const auto y = ops::conv2d(x.view(), w3.view(), b.view(), downsample);
        (void)ops::conv2d_backward(y.view(), x.view(), w3.view(), gw3.view(), gb.view(), downsample);
        const auto z = ops::conv2d(x.view(), w1.view(), b.view());
        (void)ops::conv2d_backward(z.view(), x.view(), w1.view(), gw1.view(), gb.view());
    };
    step();
    const std::size_t algorithms = cuda_detail::algorithm_cache().size(), allocations = memory<gpu>::allocation_count();
    step();
    BOOST_TEST(cuda_detail::algorithm_cache().size() == algorithms);
    BOOST_TEST(memory<gpu>::allocation_count() == allocations);
}

BOOST_AUTO_TEST_CASE(a_repeated_step_allocates_nothing_new) {
    const auto x = on_device(random_matrix({64, 96}, 12)), w = on_device(random_matrix({128, 96}, 13));
    auto step = [&] {
        auto y = ops::linear(x.view(), w.view());
        auto z = ops::add(y.view(), y.view());
        return ops::scale(z.view(), 0.5f);
    };
    (void)step();
    const std::size_t before = memory<gpu>::allocation_count();
    for (int i = 0; i < 5; ++i) (void)step();
    BOOST_TEST(memory<gpu>::allocation_count() == before);
}

BOOST_AUTO_TEST_CASE(out_of_memory_names_the_requested_size) {
    const std::size_t huge = std::size_t{1} << 50;  // 1 PiB
    try {
        (void)memory<gpu>::allocate(huge);
        BOOST_FAIL("allocating 1 PiB succeeded");
    } catch (const cuda_out_of_memory& e) {
        BOOST_TEST(std::string(e.what()).find(std::to_string(huge)) != std::string::npos, e.what());
    }
    // The device is still usable afterwards.
    const auto after = tensor<float, gpu>::full({3}, 1.0f).to_vector();
    BOOST_TEST(after == std::vector<float>(3, 1.0f), boost::test_tools::per_element());
}

int main(int argc, char* argv[]) {
    if (const int gate = testing::cuda_test_gate("cuda_backend"); gate != 0) return gate;
    set_cuda_conv_tf32(false);  // compared with the cpu at fp32 precision (TF32 convolutions are the default)
    return boost::unit_test::unit_test_main(&init_unit_test, argc, argv);  // init_unit_test: BOOST_TEST_MODULE's
}
