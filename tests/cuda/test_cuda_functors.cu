// The cuda backend's device functors run on the host (Thrust's host system), so their logic is
// tested on every machine, GPU or not: Philox block indexing and the partly used last block, the
// fused affine maps, the activation formulas, the Linear's bias rows, the convolutions' choice of
// path, cuDNN's padding split and algorithm cache keys, the fused attention's steps, the deferred
// index checks, clipping on the device. What only a GPU can check (the device's math library,
// cuBLAS, cuDNN, the stream) is in test_cuda_backend.cu.
#define BOOST_TEST_MODULE cuda_functors
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <algorithm>
#include <array>
#include <cstdint>
#include <iterator>
#include <set>
#include <cstring>
#include <string>
#include <cstdlib>
#include <map>
#include <random>
#include <vector>

#include <thrust/execution_policy.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/transform.h>
#include <thrust/system_error.h>
#include <thrust/transform_reduce.h>

#include "vediff/backend/cpu/batch_norm.hpp"
#include "vediff/backend/cpu/channel_norm.hpp"
#include "vediff/backend/cpu/optim.hpp"
#include "vediff/backend/cpu/pool.hpp"
#include "vediff/backend/cuda.hpp"
#include "vediff/core/conv2d_geometry.hpp"

using namespace vediff;

namespace {

// Elements first .. first + n − 1 of the draw at `offset` (first > 0: a data-parallel rank's slice).
template <class T, class Write>
std::vector<T> draw_on_host(std::int64_t n, std::uint64_t offset, Write write, std::uint64_t first = 0) {
    std::vector<T> out(static_cast<std::size_t>(n), T(-999));
    const cuda_detail::philox_block_op<T, Write> op{out.data(), n, 42, 3, offset, first, write};
    const auto blocks = static_cast<std::int64_t>((first + static_cast<std::uint64_t>(n) + 3) / 4 - first / 4);
    thrust::for_each(thrust::host, thrust::counting_iterator<std::int64_t>(0), thrust::counting_iterator<std::int64_t>(blocks), op);
    return out;
}

} // namespace

BOOST_AUTO_TEST_CASE(philox_functors_give_the_host_streams) {
    for (std::int64_t n : {1, 4, 1001}) {
        BOOST_TEST_CONTEXT("n " << n) {
            const auto u = draw_on_host<float>(n, 7, cuda_detail::uniform_write<float>{-2.0f, 3.0f});
            const auto z = draw_on_host<double>(n, 7, cuda_detail::normal_write<double>{1.0, 0.5});
            const auto b = draw_on_host<float>(n, 7, cuda_detail::bernoulli_write<float>{0.3, 2.0f});
            for (std::int64_t i = 0; i < n; ++i) {
                const auto ui = static_cast<std::uint64_t>(i);
                BOOST_TEST(u[i] == std::fma(5.0f, philox_uniform<float>(42, 3, 7, ui), -2.0f));
                BOOST_TEST(z[i] == std::fma(0.5, philox_normal<double>(42, 3, 7, ui), 1.0));
                BOOST_TEST(b[i] == (philox_uniform<double>(42, 3, 7, ui) < 0.3 ? 2.0f : 0.0f));
            }
            // Label dropout: hit elements get the value, the others keep theirs (-999 here).
            const auto r = draw_on_host<std::int32_t>(n, 7, cuda_detail::replace_write<std::int32_t>{0.3, 10});
            for (std::int64_t i = 0; i < n; ++i)
                BOOST_TEST(r[i] == (philox_uniform<double>(42, 3, 7, static_cast<std::uint64_t>(i)) < 0.3 ? 10 : -999));
        }
    }
}

// A slice that starts and ends inside Philox blocks (e.g. first = 5, n = 7: word 1 of block 1 to
// word 3 of block 2, splitting the normals' Box–Muller pairs) holds the draw's elements.
BOOST_AUTO_TEST_CASE(philox_functors_give_a_slice_of_the_draw) {
    for (std::uint64_t first : {1, 3, 5, 6}) {
        BOOST_TEST_CONTEXT("first " << first) {
            const std::int64_t n = 7;
            const auto u = draw_on_host<float>(n, 7, cuda_detail::uniform_write<float>{-2.0f, 3.0f}, first);
            const auto z = draw_on_host<double>(n, 7, cuda_detail::normal_write<double>{1.0, 0.5}, first);
            const auto r = draw_on_host<std::int32_t>(n, 7, cuda_detail::replace_write<std::int32_t>{0.3, 10}, first);
            for (std::int64_t i = 0; i < n; ++i) {
                const auto g = first + static_cast<std::uint64_t>(i);
                BOOST_TEST(u[i] == std::fma(5.0f, philox_uniform<float>(42, 3, 7, g), -2.0f));
                BOOST_TEST(z[i] == std::fma(0.5, philox_normal<double>(42, 3, 7, g), 1.0));
                BOOST_TEST(r[i] == (philox_uniform<double>(42, 3, 7, g) < 0.3 ? 10 : -999));
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(training_time_functor_is_the_cpu_map) {
    std::vector<float> t = {-40.0f, -1.0f, 0.0f, 0.5f, 2.0f, 40.0f}, expected = t;
    thrust::for_each(thrust::host, thrust::counting_iterator<std::int64_t>(0), thrust::counting_iterator<std::int64_t>(6),
                     cuda_detail::training_time_op<float>{t.data(), true, 0.3});
    for (auto& v : expected) v = training_time<float>(double(v), true, 0.3);
    BOOST_TEST(t == expected, boost::test_tools::per_element());
    BOOST_TEST(t.back() < 1.0f);
}

BOOST_AUTO_TEST_CASE(activation_functors_match_the_formulas) {
    for (double v : {-6.0, -1.3, -1e-3, 0.0, 0.7, 2.5, 9.0}) {
        BOOST_TEST_CONTEXT("x " << v) {
            const double g = 0.8, s = 1.0 / (1.0 + std::exp(-v));
            const double k = 0.7978845608028654, th = std::tanh(k * (v + 0.044715 * v * v * v));
            BOOST_TEST(cuda_detail::silu_op<double>{}(v) == v * s, boost::test_tools::tolerance(1e-14));
            BOOST_TEST(cuda_detail::silu_grad_op<double>{}(g, v) == g * s * (1.0 + v * (1.0 - s)), boost::test_tools::tolerance(1e-14));
            BOOST_TEST(cuda_detail::gelu_tanh_op<double>{}(v) == 0.5 * v * (1.0 + th), boost::test_tools::tolerance(1e-14));
            // The derivatives against central differences of the forwards (absolute: the tails are ~1e-9).
            const double h = 1e-6, fd = (cuda_detail::gelu_tanh_op<double>{}(v + h) - cuda_detail::gelu_tanh_op<double>{}(v - h)) / (2 * h);
            BOOST_TEST(std::abs(cuda_detail::gelu_tanh_grad_op<double>{}(1.0, v) - fd) < 1e-8);
            const double fd_silu = (cuda_detail::silu_op<double>{}(v + h) - cuda_detail::silu_op<double>{}(v - h)) / (2 * h);
            BOOST_TEST(std::abs(cuda_detail::silu_grad_op<double>{}(1.0, v) - fd_silu) < 1e-8);
        }
    }
}

BOOST_AUTO_TEST_CASE(elementwise_and_bias_functors) {
    const std::vector<float> a = {1, -2, 3.5f}, b = {0.5f, 4, -1};
    std::vector<float> out(3);
    thrust::transform(thrust::host, a.begin(), a.end(), b.begin(), out.begin(), cuda_detail::axpby_op<float>{2.0f, -1.0f});
    BOOST_TEST(out == (std::vector<float>{1.5f, -8.0f, 8.0f}), boost::test_tools::per_element());
    thrust::transform(thrust::host, a.begin(), a.end(), out.begin(), cuda_detail::shift_op<float>{0.5f});
    BOOST_TEST(out == (std::vector<float>{1.5f, -1.5f, 4.0f}), boost::test_tools::per_element());
    // Bias rows of a 2 × 3 output.
    std::vector<float> rows(6);
    thrust::transform(thrust::host, thrust::counting_iterator<std::int64_t>(0), thrust::counting_iterator<std::int64_t>(6), rows.begin(),
                      cuda_detail::bias_rows_op<float>{b.data(), 3});
    BOOST_TEST(rows == (std::vector<float>{0.5f, 4, -1, 0.5f, 4, -1}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(adamw_functor_is_torchs_update) {
    // Two steps of AdamW on three parameters, against the update written out in double.
    std::vector<float> p = {0.5f, -1.0f, 2.0f}, m(3, 0.0f), v(3, 0.0f);
    const std::vector<float> g = {0.1f, -0.3f, 2.0f};
    std::vector<double> pd(p.begin(), p.end()), md(3, 0.0), vd(3, 0.0);
    const double lr = 1e-2, wd = 0.1, b1 = 0.9, b2 = 0.95, eps = 1e-8;
    for (int t = 1; t <= 2; ++t) {
        const adamw_scalars s{.decay_factor = 1 - lr * wd, .beta1 = b1, .beta2 = b2, .eps = eps,
                              .step_size = lr / (1 - std::pow(b1, t)), .bias_correction2_sqrt = std::sqrt(1 - std::pow(b2, t))};
        const cuda_detail::adamw_op<float> op{p.data(), m.data(), v.data(), g.data(), float(s.decay_factor), float(b1), float(b2),
                                              float(1 - b1), float(1 - b2), float(eps), float(-s.step_size), float(s.bias_correction2_sqrt)};
        thrust::for_each(thrust::host, thrust::counting_iterator<std::int64_t>(0), thrust::counting_iterator<std::int64_t>(3), op);
        for (std::size_t i = 0; i < 3; ++i) {
            md[i] = b1 * md[i] + (1 - b1) * g[i];
            vd[i] = b2 * vd[i] + (1 - b2) * double(g[i]) * g[i];
            pd[i] = pd[i] * (1 - lr * wd) - s.step_size * md[i] / (std::sqrt(vd[i]) / s.bias_correction2_sqrt + eps);
        }
    }
    for (std::size_t i = 0; i < 3; ++i) BOOST_TEST(double(p[i]) == pd[i], boost::test_tools::tolerance(1e-6));
    BOOST_TEST(thrust::transform_reduce(thrust::host, g.begin(), g.end(), cuda_detail::square_in_double_op<float>{}, 0.0,
                                        thrust::plus<double>()) == 0.01 + 0.09 + 4.0, boost::test_tools::tolerance(1e-7));
}

namespace {

/// Element (i0, i1, i2) of a row-major rank-3 tensor.
std::int64_t at3(const tensor_shape& s, std::int64_t i0, std::int64_t i1, std::int64_t i2) { return (i0 * s[1] + i1) * s[2] + i2; }

std::vector<float> ramp(std::int64_t n, float step, float start) {
    std::vector<float> v(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = start + step * float(i);
    return v;
}

} // namespace

BOOST_AUTO_TEST_CASE(broadcast_functors_pair_each_element_with_its_small_element) {
    const tensor_shape full{2, 3, 4};
    for (const tensor_shape small : {tensor_shape{2, 1, 4}, tensor_shape{1, 3, 1}, tensor_shape{1, 1, 1}, tensor_shape{2, 3, 4}}) {
        BOOST_TEST_CONTEXT("small " << fmt::format("{}", small)) {
            const auto x = ramp(full.numel(), 0.5f, -3.0f), shift = ramp(small.numel(), 0.25f, 1.0f), scale = ramp(small.numel(), -0.125f, 0.5f);
            std::vector<float> out(static_cast<std::size_t>(full.numel()));
            const cuda_detail::broadcast_op<cuda_detail::modulate_f<float>> op{cuda_detail::small_operand_walk(full, small),
                                                                               {out.data(), x.data(), shift.data(), scale.data()}};
            thrust::for_each(thrust::host, thrust::counting_iterator<std::int64_t>(0), thrust::counting_iterator<std::int64_t>(full.numel()), op);
            for (std::int64_t i = 0; i < 2; ++i)
                for (std::int64_t j = 0; j < 3; ++j)
                    for (std::int64_t k = 0; k < 4; ++k) {
                        const auto s = static_cast<std::size_t>(at3(small, small[0] == 1 ? 0 : i, small[1] == 1 ? 0 : j, small[2] == 1 ? 0 : k));
                        const auto f = static_cast<std::size_t>(at3(full, i, j, k));
                        BOOST_TEST(out[f] == x[f] * (1.0f + scale[s]) + shift[s]);
                    }
        }
    }
}

BOOST_AUTO_TEST_CASE(reduction_functors_sum_in_fixed_chunks) {
    // (3, 9000) → (3, 1): three chunks of at most 4096 per output; (2, 3, 4) → (1, 3, 1) and → ().
    struct shapes {
        tensor_shape full, small;
    };
    for (const auto& c : {shapes{{3, 9000}, {3, 1}}, shapes{{2, 3, 4}, {1, 3, 1}}, shapes{{2, 3, 4}, {1, 1, 1}}, shapes{{2, 3, 4}, {2, 3, 4}}}) {
        BOOST_TEST_CONTEXT("full " << fmt::format("{}", c.full) << " small " << fmt::format("{}", c.small)) {
            const auto x = ramp(c.full.numel(), 0.001f, -2.0f);
            const auto plan = cuda_detail::plan_reduction(c.full, c.small);
            BOOST_TEST(plan.outputs == c.small.numel());
            const std::int64_t chunk = 4096, chunks = (plan.per_output + chunk - 1) / chunk;
            std::vector<double> partial(static_cast<std::size_t>(plan.outputs * chunks));
            std::vector<float> out(static_cast<std::size_t>(plan.outputs));
            thrust::for_each(thrust::host, thrust::counting_iterator<std::int64_t>(0), thrust::counting_iterator<std::int64_t>(plan.outputs * chunks),
                             cuda_detail::partial_sum_op<cuda_detail::load_op<float>>{plan, chunk, chunks, {x.data()}, partial.data()});
            thrust::for_each(thrust::host, thrust::counting_iterator<std::int64_t>(0), thrust::counting_iterator<std::int64_t>(plan.outputs),
                             cuda_detail::finish_sum_op<float>{partial.data(), chunks, 0.5, out.data()});
            // Reference: every full element added to the output it broadcasts from.
            std::vector<double> want(static_cast<std::size_t>(plan.outputs), 0.0);
            const auto walk = cuda_detail::small_operand_walk(c.full, c.small);
            for (std::int64_t i = 0; i < c.full.numel(); ++i) want[static_cast<std::size_t>(walk.offset(i))] += x[static_cast<std::size_t>(i)];
            for (std::size_t o = 0; o < want.size(); ++o) BOOST_TEST(double(out[o]) == 0.5 * want[o], boost::test_tools::tolerance(1e-6));
        }
    }
}

namespace {

std::vector<double> random_values(std::size_t n, std::uint64_t seed, double scale = 1.0, double shift = 0.0) {
    std::vector<double> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = shift + scale * philox_normal<double>(seed, 0, 0, i);
    return v;
}

template <class F>
void run_on_host(std::int64_t n, F f) {
    thrust::for_each(thrust::host, thrust::counting_iterator<std::int64_t>(0), thrust::counting_iterator<std::int64_t>(n), f);
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0;
    for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
}

/// Central differences of loss() with respect to every element of v, against `analytic`.
template <class Loss>
double worst_gradient_error(std::vector<double>& v, const std::vector<double>& analytic, Loss loss) {
    double worst = 0;
    for (std::size_t i = 0; i < v.size(); ++i) {
        const double keep = v[i], h = 1e-5;
        v[i] = keep + h;
        const double up = loss();
        v[i] = keep - h;
        const double down = loss();
        v[i] = keep;
        worst = std::max(worst, std::abs((up - down) / (2 * h) - analytic[i]));
    }
    return worst;
}

/// A row job that counts its loads and stores: each j of each row must be loaded once, then stored
/// once after the row's sum is known.
struct counting_row_job {
    std::vector<std::int64_t>* lengths;
    std::vector<int>* loads;
    std::vector<int>* stores;
    std::vector<double>* sums;
    std::int64_t stride;
    using accumulator = double;
    using row_result = double;
    double identity() const { return 0.0; }
    static double combine(double a, double b) { return a + b; }
    std::int64_t reduce_length(std::int64_t row) const { return (*lengths)[static_cast<std::size_t>(row)]; }
    std::int64_t map_length(std::int64_t row) const { return (*lengths)[static_cast<std::size_t>(row)]; }
    double load(std::int64_t row, std::int64_t j) const {
        ++(*loads)[static_cast<std::size_t>(row * stride + j)];
        return double(row * stride + j);
    }
    double finish(std::int64_t, double s) const { return s; }
    void save(std::int64_t row, const double& s) const { (*sums)[static_cast<std::size_t>(row)] = s; }
    void store(std::int64_t row, std::int64_t j, const double& s) const {
        BOOST_TEST(s == (*sums)[static_cast<std::size_t>(row)]);  // saved before any store
        ++(*stores)[static_cast<std::size_t>(row * stride + j)];
    }
};

struct counting_column_job {
    std::vector<int>* loads;
    std::vector<double>* out;
    std::int64_t cols;
    using accumulator = double;
    double identity() const { return 0.0; }
    static double combine(double a, double b) { return a + b; }
    double load(std::int64_t i, std::int64_t j) const {
        ++(*loads)[static_cast<std::size_t>(i * cols + j)];
        return double(i) + 1e-3 * double(j);
    }
    void finish(std::int64_t j, double s) const { (*out)[static_cast<std::size_t>(j)] += s; }
};

} // namespace

BOOST_AUTO_TEST_CASE(cooperative_reductions_visit_every_element_once) {
    BOOST_TEST(cuda_detail::row_threads(1) == 32);
    BOOST_TEST(cuda_detail::row_threads(300) == 128);
    BOOST_TEST(cuda_detail::row_threads(1 << 20) == 256);
    // Rows of 0, 1, fewer values than threads, and several values per thread.
    std::vector<std::int64_t> lengths = {0, 1, 31, 257, 1000};
    const std::int64_t stride = 1000, rows = 5;
    std::vector<int> loads(rows * stride, 0), stores(rows * stride, 0);
    std::vector<double> sums(rows, -1.0);
    cuda_detail::reduce_rows_on_host(counting_row_job{&lengths, &loads, &stores, &sums, stride}, rows, 1000);
    for (std::int64_t row = 0; row < rows; ++row) {
        double want = 0;
        for (std::int64_t j = 0; j < stride; ++j) {
            const auto e = static_cast<std::size_t>(row * stride + j);
            const int expected = j < lengths[static_cast<std::size_t>(row)] ? 1 : 0;
            BOOST_TEST(loads[e] == expected);
            BOOST_TEST(stores[e] == expected);
            if (expected) want += double(e);
        }
        BOOST_TEST(sums[static_cast<std::size_t>(row)] == want);
    }
    // Columns: 1000 rows are 4 chunks of 256; 37 columns are two tiles, the second partly used.
    BOOST_TEST(cuda_detail::column_chunk_rows(1000) == 256);
    BOOST_TEST((std::int64_t{100000000} + cuda_detail::column_chunk_rows(100000000) - 1) / cuda_detail::column_chunk_rows(100000000) <=
               cuda_detail::max_column_chunks);
    for (std::int64_t rows_c : {std::int64_t{0}, std::int64_t{3}, std::int64_t{1000}}) {
        BOOST_TEST_CONTEXT("rows " << rows_c) {
            const std::int64_t cols = 37;
            std::vector<int> col_loads(static_cast<std::size_t>(rows_c * cols), 0);
            std::vector<double> out(cols, 0.5);
            cuda_detail::reduce_columns_on_host(counting_column_job{&col_loads, &out, cols}, rows_c, cols);
            BOOST_TEST(std::all_of(col_loads.begin(), col_loads.end(), [](int c) { return c == 1; }));
            for (std::int64_t j = 0; j < cols; ++j) {
                const double want = 0.5 + double(rows_c * (rows_c - 1) / 2) + 1e-3 * double(j) * double(rows_c);
                BOOST_TEST(out[static_cast<std::size_t>(j)] == want, boost::test_tools::tolerance(1e-12));
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(softmax_jobs_normalize_and_differentiate) {
    // Short rows and rows longer than their 128 threads; values far apart, so the partial sums
    // are rescaled as they combine (exp of the raw values would overflow a double).
    for (std::int64_t dim : {7, 300}) {
        BOOST_TEST_CONTEXT("dim " << dim) {
            const std::int64_t rows = 3;
            auto x = random_values(static_cast<std::size_t>(rows * dim), 21, 400.0);
            const auto r = random_values(x.size(), 22);
            std::vector<double> y(x.size()), dx(x.size());
            const auto forward = [&] {
                cuda_detail::reduce_rows_on_host(cuda_detail::softmax_job<double>{y.data(), x.data(), dim, 1.0}, rows, dim);
                return dot(y, r);
            };
            forward();
            for (std::int64_t i = 0; i < rows; ++i) {
                double sum = 0, max_x = x[static_cast<std::size_t>(i * dim)];
                std::int64_t argmax = 0;
                for (std::int64_t j = 0; j < dim; ++j) {
                    sum += y[static_cast<std::size_t>(i * dim + j)];
                    if (x[static_cast<std::size_t>(i * dim + j)] > max_x) max_x = x[static_cast<std::size_t>(i * dim + j)], argmax = j;
                }
                BOOST_TEST(sum == 1.0, boost::test_tools::tolerance(1e-14));
                // The direct formula, shifted by the true maximum.
                double denominator = 0;
                for (std::int64_t j = 0; j < dim; ++j) denominator += std::exp(x[static_cast<std::size_t>(i * dim + j)] - max_x);
                BOOST_TEST(y[static_cast<std::size_t>(i * dim + argmax)] == 1.0 / denominator, boost::test_tools::tolerance(1e-14));
            }
            cuda_detail::reduce_rows_on_host(cuda_detail::softmax_backward_job<double>{dx.data(), r.data(), y.data(), dim, 1.0}, rows, dim);
            // Steep rows: differences of a smaller step; most gradients are tiny.
            for (auto& v : x) v /= 100.0;
            forward();
            cuda_detail::reduce_rows_on_host(cuda_detail::softmax_backward_job<double>{dx.data(), r.data(), y.data(), dim, 1.0}, rows, dim);
            BOOST_TEST(worst_gradient_error(x, dx, forward) < 1e-8);
        }
    }
}

BOOST_AUTO_TEST_CASE(layer_and_rms_norm_jobs_pass_gradient_checks) {
    for (std::int64_t dim : {6, 300}) {
        BOOST_TEST_CONTEXT("dim " << dim) {
            const std::int64_t rows = 4;
            auto x = random_values(static_cast<std::size_t>(rows * dim), 23, 1.5, 3.0);  // a mean far from zero
            auto w = random_values(static_cast<std::size_t>(dim), 24, 0.3, 1.0), b = random_values(static_cast<std::size_t>(dim), 25, 0.2);
            const auto r = random_values(static_cast<std::size_t>(rows * dim), 26);
            std::vector<double> y(x.size()), mean(rows), rstd(rows);
            const auto layer = [&] {
                cuda_detail::reduce_rows_on_host(
                    cuda_detail::layer_norm_forward_job<double>{y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), dim, 1e-6},
                    rows, dim);
                return dot(y, r);
            };
            layer();
            for (std::int64_t i = 0; i < rows; ++i) {  // the statistics themselves
                double m = 0, v = 0;
                for (std::int64_t j = 0; j < dim; ++j) m += x[static_cast<std::size_t>(i * dim + j)] / double(dim);
                for (std::int64_t j = 0; j < dim; ++j) v += std::pow(x[static_cast<std::size_t>(i * dim + j)] - m, 2) / double(dim);
                BOOST_TEST(mean[static_cast<std::size_t>(i)] == m, boost::test_tools::tolerance(1e-12));
                BOOST_TEST(rstd[static_cast<std::size_t>(i)] == 1 / std::sqrt(v + 1e-6), boost::test_tools::tolerance(1e-10));
            }
            std::vector<double> dx(x.size()), dw(static_cast<std::size_t>(dim), 0.0), db(static_cast<std::size_t>(dim), 0.0);
            cuda_detail::reduce_rows_on_host(
                cuda_detail::layer_norm_backward_job<double>{dx.data(), r.data(), x.data(), mean.data(), rstd.data(), w.data(), dim}, rows, dim);
            cuda_detail::reduce_columns_on_host(
                cuda_detail::layer_norm_param_grads_job<double>{dw.data(), db.data(), r.data(), x.data(), mean.data(), rstd.data(), dim}, rows,
                dim);
            BOOST_TEST(worst_gradient_error(x, dx, layer) < 1e-7);
            BOOST_TEST(worst_gradient_error(w, dw, layer) < 1e-7);
            BOOST_TEST(worst_gradient_error(b, db, layer) < 1e-7);

            const auto rms = [&] {
                cuda_detail::reduce_rows_on_host(cuda_detail::rms_norm_forward_job<double>{y.data(), rstd.data(), x.data(), w.data(), dim, 1e-6},
                                                 rows, dim);
                return dot(y, r);
            };
            rms();
            std::fill(dw.begin(), dw.end(), 0.0);
            cuda_detail::reduce_rows_on_host(cuda_detail::rms_norm_backward_job<double>{dx.data(), r.data(), x.data(), rstd.data(), w.data(), dim},
                                             rows, dim);
            cuda_detail::reduce_columns_on_host(cuda_detail::rms_norm_weight_grad_job<double>{dw.data(), r.data(), x.data(), rstd.data(), dim},
                                                rows, dim);
            BOOST_TEST(worst_gradient_error(x, dx, rms) < 1e-7);
            BOOST_TEST(worst_gradient_error(w, dw, rms) < 1e-7);
        }
    }
}

BOOST_AUTO_TEST_CASE(an_in_place_group_norm_needs_every_finish_before_any_store) {
    // Group norm's finish reads the row's first value (its shift). Written in place (y = x), the
    // kernel's schedule (all finish, a barrier, then the stores) gives the out-of-place result bit
    // for bit; the schedule without that barrier, a thread storing before the next one finishes,
    // would not.
    const std::int64_t n = 2, channels = 4, groups = 2, per_group = channels / groups, spatial = 40;
    const auto x = random_values(static_cast<std::size_t>(n * channels * spatial), 31, 1.5, 3.0);
    const auto w = random_values(channels, 32, 0.3, 1.0), b = random_values(channels, 33, 0.2);
    const auto run = [&](bool in_place, cuda_detail::row_schedule schedule) {
        std::vector<double> data = x, out(x.size()), mean(n * groups), rstd(n * groups);
        double* y = in_place ? data.data() : out.data();
        cuda_detail::reduce_rows_on_host(
            cuda_detail::group_norm_forward_job<double>{y, mean.data(), rstd.data(), data.data(), w.data(), b.data(), groups, per_group,
                                                        spatial, 1e-6},
            n * groups, per_group * spatial, schedule);
        return std::vector<double>(y, y + x.size());
    };
    const auto reference = run(false, cuda_detail::row_schedule::device);
    BOOST_TEST(run(true, cuda_detail::row_schedule::device) == reference, boost::test_tools::per_element());
    BOOST_TEST(run(true, cuda_detail::row_schedule::without_finish_barrier) != reference);
    BOOST_TEST(run(false, cuda_detail::row_schedule::without_finish_barrier) == reference, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(group_norm_jobs_pass_gradient_checks) {
    // Groups of 2 planes of 5 values, and of 2 planes of 150 (longer than their threads).
    for (std::int64_t spatial : {5, 150}) {
        BOOST_TEST_CONTEXT("spatial " << spatial) {
            const std::int64_t n = 2, channels = 4, groups = 2, per_group = channels / groups;
            auto x = random_values(static_cast<std::size_t>(n * channels * spatial), 27, 1.2, -2.0);
            auto w = random_values(channels, 28, 0.3, 1.0), b = random_values(channels, 29, 0.2);
            const auto r = random_values(x.size(), 30);
            std::vector<double> y(x.size()), mean(n * groups), rstd(n * groups);
            const auto forward = [&] {
                cuda_detail::reduce_rows_on_host(cuda_detail::group_norm_forward_job<double>{y.data(), mean.data(), rstd.data(), x.data(), w.data(),
                                                                                             b.data(), groups, per_group, spatial, 1e-6},
                                                 n * groups, per_group * spatial);
                return dot(y, r);
            };
            forward();
            std::vector<double> sum_dy_x(n * channels), sum_dy(n * channels), dx(x.size()), dw(channels, 0.0), db(channels, 0.0);
            cuda_detail::reduce_rows_on_host(cuda_detail::channel_sums_job<double>{sum_dy_x.data(), sum_dy.data(), r.data(), x.data(), spatial},
                                             n * channels, spatial);
            cuda_detail::reduce_rows_on_host(cuda_detail::group_norm_backward_job<double>{dx.data(), r.data(), x.data(), mean.data(), rstd.data(),
                                                                                          w.data(), sum_dy_x.data(), sum_dy.data(), groups,
                                                                                          per_group, spatial},
                                             n * groups, per_group * spatial);
            run_on_host(channels, cuda_detail::group_norm_param_grads_op<double>{dw.data(), db.data(), mean.data(), rstd.data(), sum_dy_x.data(),
                                                                                 sum_dy.data(), n, channels, groups});
            BOOST_TEST(worst_gradient_error(x, dx, forward) < 1e-7);
            BOOST_TEST(worst_gradient_error(w, dw, forward) < 1e-7);
            BOOST_TEST(worst_gradient_error(b, db, forward) < 1e-7);
        }
    }
}

BOOST_AUTO_TEST_CASE(loss_jobs_sum_in_blocks_and_pass_gradient_checks) {
    // Each term's per-element derivative (accumulated into a prefilled buffer) against central
    // differences of its blocked sum; n spans three blocks of 8192 with a partial last one.
    const std::int64_t n = 2 * 8192 + 77, block = 8192, blocks = 3;
    auto a = random_values(static_cast<std::size_t>(n), 40, 1.5), b = random_values(static_cast<std::size_t>(n), 41);
    std::vector<double> partial(blocks);
    const auto blocked = [&](auto term) {
        cuda_detail::reduce_rows_on_host(cuda_detail::block_sum_job<decltype(term)>{term, n, block, partial.data()}, blocks, block);
        return partial[0] + partial[1] + partial[2];
    };
    const auto check = [&](const char* name, auto make_term, std::vector<double>& wrt) {
        BOOST_TEST_CONTEXT(name) {
            std::vector<double> grad(static_cast<std::size_t>(n), 0.25);  // prefilled: the kernels accumulate
            const double g = 0.5;
            const double value = blocked(make_term(grad.data(), g));
            double direct = 0;
            const auto plain = make_term(static_cast<double*>(nullptr), g);
            for (std::int64_t i = 0; i < n; ++i) direct += plain(i);
            BOOST_TEST(value == direct, boost::test_tools::tolerance(1e-12));
            // Check 40 elements spread over the blocks.
            double worst = 0;
            for (std::int64_t k = 0; k < 40; ++k) {
                const auto i = static_cast<std::size_t>(k * (n / 40));
                const double keep = wrt[i], h = 1e-6;
                wrt[i] = keep + h;
                const double up = plain(static_cast<std::int64_t>(i));
                wrt[i] = keep - h;
                const double down = plain(static_cast<std::int64_t>(i));
                wrt[i] = keep;
                worst = std::max(worst, std::abs(g * (up - down) / (2 * h) - (grad[i] - 0.25)));
            }
            BOOST_TEST(worst < 1e-7);
        }
    };
    check("abs_error", [&](double* d, double g) { return cuda_detail::abs_error_term<double>{b.data(), a.data(), d, g}; }, a);
    check("squared_error", [&](double* d, double g) { return cuda_detail::squared_error_term<double>{b.data(), a.data(), d, g}; }, a);
    check("inverse_variance", [&](double* d, double g) { return cuda_detail::inverse_variance_term<double>{a.data(), 1e-6, d, g}; }, a);
    check("magnitude", [&](double* d, double g) { return cuda_detail::magnitude_term<double>{a.data(), 1.0, d, g}; }, a);
    check("gaussian_kl (mean)", [&](double* d, double g) { return cuda_detail::gaussian_kl_term<double>{a.data(), b.data(), d, nullptr, g}; }, a);
    check("gaussian_kl (logvar)", [&](double* d, double g) { return cuda_detail::gaussian_kl_term<double>{a.data(), b.data(), nullptr, d, g}; }, b);

    // Per-channel moments of z (B, C, S) = (3, 2, 5): the mean pass, then squared deviations about it.
    const std::int64_t B = 3, C = 2, S = 5;
    const auto z = random_values(static_cast<std::size_t>(B * C * S), 42, 2.0, 1.0);
    std::vector<double> mean(C), m2(C);
    cuda_detail::reduce_rows_on_host(cuda_detail::channel_power_sum_job<double>{z.data(), nullptr, mean.data(), B, C, S, 1, 1.0 / double(B * S)}, C,
                                     B * S);
    cuda_detail::reduce_rows_on_host(cuda_detail::channel_power_sum_job<double>{z.data(), mean.data(), m2.data(), B, C, S, 2, 1.0}, C, B * S);
    for (std::int64_t c = 0; c < C; ++c) {
        double mu = 0, q = 0;
        for (std::int64_t b = 0; b < B; ++b)
            for (std::int64_t j = 0; j < S; ++j) mu += z[static_cast<std::size_t>((b * C + c) * S + j)] / double(B * S);
        for (std::int64_t b = 0; b < B; ++b)
            for (std::int64_t j = 0; j < S; ++j) q += std::pow(z[static_cast<std::size_t>((b * C + c) * S + j)] - mu, 2);
        BOOST_TEST(mean[static_cast<std::size_t>(c)] == mu, boost::test_tools::tolerance(1e-13));
        BOOST_TEST(m2[static_cast<std::size_t>(c)] == q, boost::test_tools::tolerance(1e-13));
    }

    std::vector<float> bad = {1.0f, NAN, 2.0f, INFINITY, -INFINITY};
    double count = 0;
    for (std::int64_t i = 0; i < 5; ++i) count += cuda_detail::nonfinite_term<float>{bad.data()}(i);
    BOOST_TEST(count == 3.0);
}

BOOST_AUTO_TEST_CASE(posterior_functors_split_clamp_and_reparameterize) {
    // moments (B = 2, 2C = 4, S = 3): rows [mean | logvar]; logvar clamped to [−30, 20] with NaN kept.
    const std::int64_t outer = 2, inner = 6;
    std::vector<double> moments(static_cast<std::size_t>(2 * outer * inner));
    for (std::size_t i = 0; i < moments.size(); ++i) moments[i] = double(i) - 5.0;
    moments[6] = -40.0;  // b = 0, logvar k = 0: below the lower bound
    moments[19] = 25.0;  // b = 1, logvar k = 1: above the upper bound
    moments[20] = NAN;   // b = 1, logvar k = 2
    std::vector<double> mean(12), logvar(12), raw(12);
    run_on_host(12, cuda_detail::posterior_split_op<double>{mean.data(), logvar.data(), raw.data(), moments.data(), inner, -30.0, 20.0});
    BOOST_TEST(mean[0] == -5.0);
    BOOST_TEST(mean[6] == moments[12]);
    BOOST_TEST(logvar[0] == -30.0);
    BOOST_TEST(raw[0] == -40.0);
    BOOST_TEST(logvar[7] == 20.0);
    BOOST_TEST(std::isnan(logvar[8]));
    BOOST_TEST(logvar[1] == moments[7]);
    std::vector<double> dmean(12, 1.0), dlogvar(12, 2.0), dmoments(24, -1.0);
    run_on_host(12, cuda_detail::posterior_split_backward_op<double>{dmoments.data(), dmean.data(), dlogvar.data(), raw.data(), inner, -30.0, 20.0});
    BOOST_TEST(dmoments[0] == 1.0);
    BOOST_TEST(dmoments[6] == 0.0);   // clamped: no gradient
    BOOST_TEST(dmoments[7] == 2.0);
    BOOST_TEST(dmoments[19] == 0.0);  // clamped from above
    // z = μ + exp(logvar/2)·ε and its gradients against central differences.
    std::vector<double> mu = {0.5, -1.0}, lv = {0.3, -2.0}, eps = {1.2, -0.7}, z(2), dmu(2, 0.0), dlv(2, 0.0);
    const std::vector<double> dz = {0.9, -1.1};
    run_on_host(2, cuda_detail::posterior_sample_op<double>{z.data(), mu.data(), lv.data(), eps.data()});
    BOOST_TEST(z[0] == 0.5 + std::exp(0.15) * 1.2, boost::test_tools::tolerance(1e-15));
    run_on_host(2, cuda_detail::posterior_sample_backward_op<double>{dmu.data(), dlv.data(), dz.data(), lv.data(), eps.data()});
    const auto loss = [&] {
        run_on_host(2, cuda_detail::posterior_sample_op<double>{z.data(), mu.data(), lv.data(), eps.data()});
        return dot(z, dz);
    };
    BOOST_TEST(worst_gradient_error(mu, dmu, loss) < 1e-8);
    BOOST_TEST(worst_gradient_error(lv, dlv, loss) < 1e-8);
}

BOOST_AUTO_TEST_CASE(only_a_machine_without_a_gpu_reads_as_zero_devices) {
    BOOST_TEST(cuda_detail::usable_device_count(cudaSuccess, 2, true) == 2);
    BOOST_TEST(cuda_detail::usable_device_count(cudaErrorNoDevice, 0, true) == 0);
    // No driver installed: CUDA says "insufficient driver", which here means "no GPU".
    BOOST_TEST(cuda_detail::usable_device_count(cudaErrorInsufficientDriver, 0, false) == 0);
    // A driver that is installed but too old, or any other failure: thrown, naming the cause.
    const auto fails_with = [](cudaError_t status, bool driver, const std::string& part) {
        try {
            (void)cuda_detail::usable_device_count(status, 0, driver);
        } catch (const cuda_error& e) {
            BOOST_TEST_INFO(e.what());
            return std::string(e.what()).find(part) != std::string::npos;
        }
        return false;
    };
    BOOST_TEST(fails_with(cudaErrorInsufficientDriver, true, "update the driver"));
    BOOST_TEST(fails_with(cudaErrorInsufficientDriver, true, "cudaErrorInsufficientDriver"));
    BOOST_TEST(fails_with(cudaErrorInitializationError, true, "cudaErrorInitializationError"));
    BOOST_TEST(fails_with(cudaErrorSystemDriverMismatch, false, "cannot be used"));
    // This machine's own answer is one of the two allowed: a count, or an explanation.
    try {
        BOOST_TEST(cuda_device_count() >= 0);
    } catch (const cuda_error& e) {
        BOOST_TEST_MESSAGE("this machine: " << e.what());
    }
}

BOOST_AUTO_TEST_CASE(thrust_failures_become_vediff_errors) {
    BOOST_CHECK_EXCEPTION(cuda_detail::thrust_call("thrust::for_each", []() -> int {
                              throw thrust::system_error(cudaErrorLaunchFailure, thrust::cuda_category(), "launch");
                          }),
                          cuda_error, [](const cuda_error& e) {
                              BOOST_TEST_INFO(e.what());
                              return std::string(e.what()).find("thrust::for_each failed") != std::string::npos;
                          });
    BOOST_CHECK_THROW(cuda_detail::thrust_call("thrust::reduce", []() -> int { throw std::bad_alloc(); }), cuda_out_of_memory);
    BOOST_TEST(cuda_detail::thrust_call("thrust::count", [] { return 7; }) == 7);
}

BOOST_AUTO_TEST_CASE(a_gpu_the_build_lacks_is_named_with_the_flag_that_adds_it) {
    const auto m = cuda_detail::missing_kernel_image_message("NVIDIA L4", 8, 9, "cudaErrorNoKernelImageForDevice");
    BOOST_TEST_INFO(m);
    BOOST_TEST(m.find("NVIDIA L4 (compute capability 8.9)") != std::string::npos);
    BOOST_TEST(m.find("-DCMAKE_CUDA_ARCHITECTURES=89") != std::string::npos);
    BOOST_TEST(m.find("cudaErrorNoKernelImageForDevice") != std::string::npos);
}

namespace {
/// block_cache's device calls on the host: streams are numbers (0 the backend's), events indices
/// into `done`, the device a budget of bytes.
struct fake_driver {
    using stream_type = int;
    using event_type = int;
    static inline std::vector<bool> done;
    static inline std::vector<int> event_streams;
    static inline std::size_t device_bytes = 0, device_capacity = 0;
    static inline std::map<void*, std::size_t> blocks;
    static void reset(std::size_t capacity) {
        done.clear();
        event_streams.clear();
        device_bytes = 0;
        device_capacity = capacity;
    }
    static void* allocate(std::size_t bytes) {
        if (device_bytes + bytes > device_capacity) return nullptr;
        device_bytes += bytes;
        void* p = std::malloc(bytes);
        blocks[p] = bytes;
        return p;
    }
    static void free(void* p) {
        device_bytes -= blocks.at(p);
        blocks.erase(p);
        std::free(p);
    }
    static stream_type backend_stream() { return 0; }
    static event_type record_event(stream_type s) {
        done.push_back(false);
        event_streams.push_back(s);
        return static_cast<int>(done.size()) - 1;
    }
    static bool event_done(event_type e) { return done.at(static_cast<std::size_t>(e)); }
    static void wait_event(event_type e) { done.at(static_cast<std::size_t>(e)) = true; }
    static void destroy_event(event_type) {}
};
} // namespace

BOOST_AUTO_TEST_CASE(a_block_used_on_another_stream_waits_for_it_before_reuse) {
    fake_driver::reset(1 << 20);
    {
        cuda_detail::block_cache<fake_driver> cache;
        // The backend's stream alone: a released block is the next allocation of its size.
        void* a = cache.allocate(256);
        cache.release(a);
        BOOST_TEST(cache.allocate(256) == a);
        BOOST_TEST(cache.stats().allocations == 1u);
        // Declaring the backend's own stream changes nothing.
        cache.record_stream(a, 0);
        cache.release(a);
        BOOST_TEST(cache.stats().pending == 0u);
        BOOST_TEST(cache.allocate(256) == a);

        // Used on stream 7 (declared through an address inside the block): released, it waits.
        void* b = cache.allocate(512);
        cache.record_stream(static_cast<char*>(b) + 100, 7);
        cache.record_stream(b, 7);  // once per stream
        cache.release(b);
        BOOST_TEST(fake_driver::event_streams == std::vector<int>{7});
        BOOST_TEST(cache.stats().pending == 512u);
        void* c = cache.allocate(512);
        BOOST_TEST(c != b);  // not reused while stream 7 may still read it
        BOOST_TEST(cache.stats().allocations == 3u);  // a, b, c
        fake_driver::done[0] = true;  // stream 7's work has run
        cache.release(c);
        void* d = cache.allocate(512);
        BOOST_TEST((d == b || d == c));
        BOOST_TEST(cache.stats().pending == 0u);
        BOOST_TEST(cache.stats().allocations == 3u);

        // Addresses outside every live block are refused, naming the address.
        BOOST_CHECK_THROW(cache.record_stream(static_cast<char*>(d) + 512, 7), std::invalid_argument);
        int not_ours = 0;
        BOOST_CHECK_THROW(cache.record_stream(&not_ours, 7), std::invalid_argument);

        // Statistics: live (a and d), the peak (with a passing 2048-byte block), the idle bytes.
        cache.release(cache.allocate(2048));
        auto s = cache.stats();
        BOOST_TEST(s.live == 256u + 512u);
        BOOST_TEST(s.peak_live == 256u + 512u + 2048u);
        BOOST_TEST(s.cached == 512u + 2048u);  // the other of b, c, and the passing block
        cache.reset_peak();
        BOOST_TEST(cache.stats().peak_live == s.live);

        // Out of room: idle blocks go back to the device first, pending ones after their streams
        // are waited for; only then does an allocation fail.
        void* e = cache.allocate(1024);
        cache.record_stream(e, 3);
        cache.release(e);
        const std::size_t room = fake_driver::device_capacity - fake_driver::device_bytes;
        void* f = cache.allocate(room + 1024 + 512 + 2048);  // needs the idle blocks and the pending 1024
        BOOST_TEST(f != nullptr);
        BOOST_TEST(fake_driver::done.back());  // stream 3 was waited for
        BOOST_TEST(cache.stats().cached == 0u);
        BOOST_TEST(cache.allocate(1 << 20) == nullptr);
        for (void* p : {a, d, f}) cache.release(p);
        const std::size_t on_device = fake_driver::device_bytes;
        BOOST_TEST(cache.trim(true) == on_device);
    }
    BOOST_TEST(fake_driver::device_bytes == 0u);
}

BOOST_AUTO_TEST_CASE(tf32_defaults_are_pytorchs) {
    // torch.backends.cuda.matmul.allow_tf32 = False, torch.backends.cudnn.allow_tf32 = True.
    BOOST_TEST(!cuda_tf32());
    BOOST_TEST(cuda_conv_tf32());
    set_cuda_conv_tf32(false);
    BOOST_TEST(!cuda_conv_tf32());
    BOOST_TEST(!cuda_tf32());  // the two switches are apart
    set_cuda_conv_tf32(true);
}

BOOST_AUTO_TEST_CASE(the_gradient_norm_covers_every_tensor_in_one_pass) {
    // Tensors shorter and longer than a chunk, and an empty one: every element counted once.
    const std::vector<std::int64_t> lengths{5, cuda_detail::multi_tensor_chunk * 2 + 17, 0, 300};
    std::vector<std::vector<float>> values;
    std::vector<const float*> pointers;
    double want = 0;
    for (std::size_t i = 0; i < lengths.size(); ++i) {
        const auto v = random_values(static_cast<std::size_t>(lengths[i]), 40 + i);
        values.emplace_back(v.begin(), v.end());
        for (const float x : values.back()) want += double(x) * double(x);
    }
    for (const auto& v : values) pointers.push_back(v.data());
    const auto chunks = cuda_detail::chunk_tensors(lengths);
    BOOST_TEST(chunks.size() == 1u + 3u + 1u);
    std::int64_t covered = 0;
    for (const auto& c : chunks) covered += c.length;
    BOOST_TEST(covered == lengths[0] + lengths[1] + lengths[3]);
    const double got = cuda_detail::sum_of_squares_many_on_host(std::span<const float* const>(pointers), std::span<const std::int64_t>(lengths));
    BOOST_TEST(got == want, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(cuda_detail::sum_of_squares_many_on_host(std::span<const float* const>{}, std::span<const std::int64_t>{}) == 0.0);
}

BOOST_AUTO_TEST_CASE(multi_tensor_updates_visit_every_element_once_with_the_single_tensor_arithmetic) {
    // Three tensors, one longer than a chunk, one empty: AdamW and EMA through the multi-tensor
    // partition equal the single-tensor functor applied element by element, bit for bit.
    const std::vector<std::int64_t> lengths{7, cuda_detail::multi_tensor_chunk + 5, 0};
    std::vector<std::vector<float>> p, m, v, g, p1, m1, v1;
    for (std::size_t i = 0; i < lengths.size(); ++i) {
        const auto n = static_cast<std::size_t>(lengths[i]);
        const auto r = [&](std::uint64_t seed, double scale, double shift) {
            const auto d = random_values(n, seed, scale, shift);
            return std::vector<float>(d.begin(), d.end());
        };
        p.push_back(r(50 + i, 1.0, 0.0));
        m.push_back(r(60 + i, 0.1, 0.0));
        v.push_back(r(70 + i, 0.01, 0.0));
        for (auto& x : v.back()) x = std::abs(x);  // second moments are ≥ 0
        g.push_back(r(80 + i, 1.0, 0.0));
    }
    p1 = p, m1 = m, v1 = v;
    std::vector<adamw_tensor<float>> entries;
    for (std::size_t i = 0; i < lengths.size(); ++i) entries.push_back({p[i].data(), m[i].data(), v[i].data(), g[i].data(), lengths[i]});
    const cuda_detail::adamw_entry_op<float> op{0.999f, 0.9f, 0.95f, 0.1f, 0.05f, 1e-8f, -1e-3f, 0.3f};
    cuda_detail::multi_tensor_apply_on_host(std::span<const adamw_tensor<float>>(entries), op);
    for (std::size_t i = 0; i < lengths.size(); ++i) {
        const cuda_detail::adamw_op<float> single{p1[i].data(), m1[i].data(), v1[i].data(), g[i].data(), 0.999f, 0.9f, 0.95f, 0.1f,
                                                  0.05f, 1e-8f, -1e-3f, 0.3f};
        for (std::int64_t k = 0; k < lengths[i]; ++k) single(k);
        BOOST_TEST(p[i] == p1[i], boost::test_tools::per_element());
        BOOST_TEST(m[i] == m1[i], boost::test_tools::per_element());
        BOOST_TEST(v[i] == v1[i], boost::test_tools::per_element());
    }
    // EMA: shadow += w·(param − shadow); a constant parameter stays a fixed point.
    std::vector<float> shadow{1.0f, 2.0f, 3.0f}, param{1.0f, 0.0f, 5.0f};
    std::vector<ema_tensor<float>> averaged{{shadow.data(), param.data(), 3}};
    cuda_detail::multi_tensor_apply_on_host(std::span<const ema_tensor<float>>(averaged), cuda_detail::ema_entry_op<float>{0.25f});
    BOOST_TEST(shadow == (std::vector<float>{1.0f, 1.5f, 3.5f}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(uploads_share_a_staging_buffer_and_wait_only_to_reuse_one) {
    cuda_detail::staging_ring ring{100};
    // Small copies fill buffer 0 without waiting.
    for (std::size_t k = 0; k < 4; ++k) {
        const auto p = ring.take(25);
        BOOST_TEST((p.buffer == 0 && p.offset == 25 * k && p.length == 25u && !p.wait_first));
    }
    // The next one switches to buffer 1, waiting for the device copies that last read it.
    auto p = ring.take(30);
    BOOST_TEST((p.buffer == 1 && p.offset == 0u && p.length == 30u && p.wait_first));
    // A large one goes up in pieces: the rest of buffer 1, then buffer 0 from its start, ...
    std::vector<cuda_detail::staging_ring::piece> pieces;
    for (std::size_t left = 250; left > 0;) {
        pieces.push_back(ring.take(left));
        left -= pieces.back().length;
    }
    BOOST_REQUIRE(pieces.size() == 3u);  // 70 + 100 + 80
    BOOST_TEST((pieces[0].buffer == 1 && pieces[0].offset == 30u && pieces[0].length == 70u && !pieces[0].wait_first));
    BOOST_TEST((pieces[1].buffer == 0 && pieces[1].offset == 0u && pieces[1].length == 100u && pieces[1].wait_first));
    BOOST_TEST((pieces[2].buffer == 1 && pieces[2].offset == 0u && pieces[2].length == 80u && pieces[2].wait_first));
}

BOOST_AUTO_TEST_CASE(cublaslt_is_told_the_operands_true_alignment) {
    // cuBLASLt assumes 256-byte operands unless told less; a view into a tensor may start anywhere
    // a float can.
    alignas(256) static float storage[128];
    BOOST_TEST(cuda_detail::address_alignment(storage) == 256u);
    BOOST_TEST(cuda_detail::address_alignment(storage + 1) == 4u);
    BOOST_TEST(cuda_detail::address_alignment(storage + 4) == 16u);
    BOOST_TEST(cuda_detail::address_alignment(storage + 32) == 128u);
    BOOST_TEST(cuda_detail::address_alignment(storage + 64) == 256u);
}

BOOST_AUTO_TEST_CASE(layout_functors_move_the_elements_the_cpu_moves) {
    // patchify: the cpu backend's loop order written out; unpatchify inverts it.
    const std::int64_t B = 2, C = 3, H = 4, W = 6, p = 2, n = B * C * H * W;
    std::vector<double> image(static_cast<std::size_t>(n)), tokens(image.size()), back(image.size());
    for (std::size_t i = 0; i < image.size(); ++i) image[i] = double(i);
    run_on_host(n, cuda_detail::patchify_op<double>{tokens.data(), image.data(), {C, H, W, p}});
    std::vector<double> want;
    for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t row = 0; row < H / p; ++row)
            for (std::int64_t col = 0; col < W / p; ++col)
                for (std::int64_t i = 0; i < p; ++i)
                    for (std::int64_t j = 0; j < p; ++j)
                        for (std::int64_t c = 0; c < C; ++c) want.push_back(image[static_cast<std::size_t>(((b * C + c) * H + row * p + i) * W + col * p + j)]);
    BOOST_TEST(tokens == want, boost::test_tools::per_element());
    run_on_host(n, cuda_detail::unpatchify_op<double>{back.data(), tokens.data(), {C, H, W, p}});
    BOOST_TEST(back == image, boost::test_tools::per_element());

    // nearest 2x and the 2x2 block sum are adjoint: <up(x), y> = <x, down(y)>.
    const std::int64_t planes = 3, h = 4, w = 5;
    auto x = random_values(static_cast<std::size_t>(planes * h * w), 50), y = random_values(static_cast<std::size_t>(planes * 4 * h * w), 51);
    std::vector<double> up(y.size()), down(x.size());
    run_on_host(planes * 4 * h * w, cuda_detail::nearest2x_op<double>{up.data(), x.data(), h, w, 1.0});
    run_on_host(planes * h * w, cuda_detail::block_sum2x2_op<double>{down.data(), y.data(), 2 * h, 2 * w, 1.0});
    BOOST_TEST(dot(up, y) == dot(x, down), boost::test_tools::tolerance(1e-12));
    BOOST_TEST(up[static_cast<std::size_t>(2 * w + 1)] == x[0]);  // output (1, 1) repeats input (0, 0)

    // Embedding rows: gather, then scatter-add with a repeated index (added in order).
    const std::vector<double> table = {0, 1, 10, 11, 20, 21};
    const std::vector<std::int32_t> index = {2, 0, 2};
    std::vector<double> rows(6), grad(6, 0.0);
    run_on_host(6, cuda_detail::gather_rows_op<double>{rows.data(), table.data(), index.data(), 2, 3});
    BOOST_TEST(rows == (std::vector<double>{20, 21, 0, 1, 20, 21}), boost::test_tools::per_element());
    run_on_host(2, cuda_detail::scatter_add_column_op<double>{grad.data(), rows.data(), index.data(), 3, 2, 3});
    BOOST_TEST(grad == (std::vector<double>{0, 1, 0, 0, 40, 42}), boost::test_tools::per_element());
    // An index outside the table (its deferred check reports it) reads zeros and adds nothing.
    const std::vector<std::int32_t> outside = {3, 0, -1};
    std::vector<double> guarded(6, -7.0), guarded_grad(6, 0.0);
    run_on_host(6, cuda_detail::gather_rows_op<double>{guarded.data(), table.data(), outside.data(), 2, 3});
    BOOST_TEST(guarded == (std::vector<double>{0, 0, 0, 1, 0, 0}), boost::test_tools::per_element());
    run_on_host(2, cuda_detail::scatter_add_column_op<double>{guarded_grad.data(), rows.data(), outside.data(), 3, 2, 3});
    BOOST_TEST(guarded_grad == (std::vector<double>{0, 1, 0, 0, 0, 0}), boost::test_tools::per_element());
    BOOST_TEST(cuda_detail::index_outside_op<std::int32_t>{3}(3));
    BOOST_TEST(!cuda_detail::index_outside_op<std::int32_t>{3}(0));
    BOOST_TEST(cuda_detail::index_outside_op<std::int32_t>{3}(-1));

    // Row copies into a wider destination (concat along the last axis).
    const std::vector<double> src = {1, 2, 3, 4};
    std::vector<double> dst(6, 0.0);
    run_on_host(4, cuda_detail::copy_rows_op<double>{dst.data() + 1, 3, src.data(), 2, 2});
    BOOST_TEST(dst == (std::vector<double>{0, 1, 2, 0, 3, 4}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(positional_and_cross_entropy_functors) {
    // Timestep embedding: [cos(t·f_k) | sin(t·f_k)].
    const std::vector<double> t = {0.0, 0.37, 999.0};
    const std::int64_t half = 4;
    std::vector<double> emb(t.size() * 2 * half);
    run_on_host(3 * half, cuda_detail::timestep_embedding_op<double>{emb.data(), t.data(), half, 10000.0});
    for (std::size_t b = 0; b < t.size(); ++b)
        for (std::int64_t k = 0; k < half; ++k) {
            const double angle = t[b] * std::exp(-std::log(10000.0) * double(k) / double(half));
            BOOST_TEST(emb[b * 2 * half + static_cast<std::size_t>(k)] == std::cos(angle), boost::test_tools::tolerance(1e-14));
            BOOST_TEST(emb[b * 2 * half + static_cast<std::size_t>(half + k)] == std::sin(angle), boost::test_tools::tolerance(1e-14));
        }

    // RoPE on (rows 2, tokens 3, heads 2, dim 4): the backward is the forward's transpose, and with
    // one angle per pair the rotation keeps every pair's norm.
    const std::int64_t rows = 2, tokens = 3, heads = 2, dim = 4, n = rows * tokens * heads * dim;
    auto x = random_values(static_cast<std::size_t>(n), 52), y = random_values(static_cast<std::size_t>(n), 53);
    std::vector<double> cosv(static_cast<std::size_t>(tokens * dim)), sinv(cosv.size());
    for (std::int64_t tok = 0; tok < tokens; ++tok)
        for (std::int64_t i = 0; i < dim; i += 2) {
            const double angle = 0.3 * double(tok + 1) * double(i + 1);
            for (std::int64_t j : {i, i + 1}) {
                cosv[static_cast<std::size_t>(tok * dim + j)] = std::cos(angle);
                sinv[static_cast<std::size_t>(tok * dim + j)] = std::sin(angle);
            }
        }
    std::vector<double> fx(x.size()), by(y.size());
    run_on_host(n / 2, cuda_detail::rope_pair_op<double, false>{fx.data(), x.data(), cosv.data(), sinv.data(), tokens, heads, dim});
    run_on_host(n / 2, cuda_detail::rope_pair_op<double, true>{by.data(), y.data(), cosv.data(), sinv.data(), tokens, heads, dim});
    BOOST_TEST(dot(fx, y) == dot(x, by), boost::test_tools::tolerance(1e-12));
    for (std::size_t i = 0; i < x.size(); i += 2)
        BOOST_TEST(std::hypot(fx[i], fx[i + 1]) == std::hypot(x[i], x[i + 1]), boost::test_tools::tolerance(1e-12));

    // Cross-entropy: row losses, the gradient against central differences, argmax.
    const std::int64_t B = 3, K = 5;
    auto logits = random_values(static_cast<std::size_t>(B * K), 54, 2.0);
    const std::vector<std::int32_t> labels = {4, 0, 2};
    std::vector<double> row_loss(B), grad(logits.size());
    const auto loss = [&] {
        run_on_host(B, cuda_detail::cross_entropy_row_op<double>{row_loss.data(), logits.data(), labels.data(), K});
        return (row_loss[0] + row_loss[1] + row_loss[2]) / double(B);
    };
    const double value = loss();
    double want = 0;
    for (std::int64_t i = 0; i < B; ++i) {
        double s = 0;
        for (std::int64_t k = 0; k < K; ++k) s += std::exp(logits[static_cast<std::size_t>(i * K + k)]);
        want += (std::log(s) - logits[static_cast<std::size_t>(i * K + labels[static_cast<std::size_t>(i)])]) / double(B);
    }
    BOOST_TEST(value == want, boost::test_tools::tolerance(1e-13));
    run_on_host(B, cuda_detail::cross_entropy_backward_op<double>{grad.data(), logits.data(), labels.data(), K, 1.0 / double(B)});
    BOOST_TEST(worst_gradient_error(logits, grad, loss) < 1e-8);
    std::vector<std::int32_t> best(B);
    const std::vector<double> ties = {1, 3, 3, 0, -1, 2, 2, 2, 2, 2, -5, -4, -9, -4, -8};
    run_on_host(B, cuda_detail::argmax_op<double>{best.data(), ties.data(), K});
    BOOST_TEST(best == (std::vector<std::int32_t>{1, 0, 1}), boost::test_tools::per_element());  // the first maximum
    BOOST_TEST(cuda_detail::equal_op{}(3, 3) == 1);
    BOOST_TEST(cuda_detail::equal_op{}(3, 4) == 0);
}

BOOST_AUTO_TEST_CASE(attention_pointer_tables_and_scaled_softmax) {
    // Pointers of (batch 2, heads 3) matrices in a packed qkv (B, N, 3·D): batch stride N·3D, head stride hd.
    std::vector<float> storage(100);
    std::vector<float*> ptrs(6);
    run_on_host(6, cuda_detail::pointer_table_op<float>{ptrs.data(), storage.data() + 1, 3, 40, 4});
    for (std::int64_t e = 0; e < 6; ++e) BOOST_TEST(ptrs[static_cast<std::size_t>(e)] - storage.data() == 1 + (e / 3) * 40 + (e % 3) * 4);
    // softmax(scale·s) rows and their backward against central differences.
    auto scores = random_values(12, 55, 2.0);
    const auto r = random_values(12, 56);
    std::vector<double> p(12), ds(12);
    const auto forward = [&] {
        p = scores;
        cuda_detail::reduce_rows_on_host(cuda_detail::softmax_job<double>{p.data(), p.data(), 4, 0.5}, 3, 4);
        return dot(p, r);
    };
    forward();
    ds = r;
    cuda_detail::reduce_rows_on_host(cuda_detail::softmax_backward_job<double>{ds.data(), ds.data(), p.data(), 4, 0.5}, 3, 4);
    BOOST_TEST(worst_gradient_error(scores, ds, forward) < 1e-8);
    // The backward's probabilities, recomputed from the scores and the forward's row statistics
    // (rows of 300 scores far apart, as a steep attention row).
    const std::int64_t rows = 3, keys = 300;
    const auto s = random_values(static_cast<std::size_t>(rows * keys), 57, 30.0);
    std::vector<double> probs(s.size()), log_sum(rows, 0.0), recomputed = s;
    cuda_detail::reduce_rows_on_host(cuda_detail::softmax_job<double>{probs.data(), s.data(), keys, 0.5, log_sum.data()}, rows, keys);
    run_on_host(rows * keys, cuda_detail::softmax_from_log_sum_op<double>{recomputed.data(), log_sum.data(), keys, 0.5});
    for (std::int64_t i = 0; i < rows; ++i) {
        double direct = 0;
        for (std::int64_t j = 0; j < keys; ++j) direct += std::exp(0.5 * s[static_cast<std::size_t>(i * keys + j)]);
        BOOST_TEST(log_sum[static_cast<std::size_t>(i)] == std::log(direct), boost::test_tools::tolerance(1e-13));
    }
    double worst = 0;
    for (std::size_t e = 0; e < s.size(); ++e) worst = std::max(worst, std::abs(recomputed[e] - probs[e]));
    BOOST_TEST(worst < 1e-14);
}

BOOST_AUTO_TEST_CASE(im2col_reads_the_convolution_windows_and_col2im_is_its_adjoint) {
    // A padded, strided 3×3 convolution on (cin 2, 7 × 6): the product of the weights with im2col's
    // columns is the convolution written out, and col2im is im2col's transpose.
    conv2d_geometry g;
    g.batch = 1, g.in_channels = 2, g.in_h = 7, g.in_w = 6, g.out_channels = 3, g.kernel_h = 3, g.kernel_w = 3;
    g.stride_h = 2, g.stride_w = 1, g.pad_top = 1, g.pad_bottom = 1, g.pad_left = 1, g.pad_right = 0;
    g.out_h = (7 + 2 - 3) / 2 + 1, g.out_w = (6 + 1 - 3) / 1 + 1;
    const cuda_detail::conv_shape s(g);
    const std::int64_t patch = g.patch(), plane = g.out_plane();
    auto x = random_values(static_cast<std::size_t>(g.in_channels * g.in_plane()), 60);
    const auto w = random_values(static_cast<std::size_t>(g.out_channels * patch), 61);
    std::vector<double> col(static_cast<std::size_t>(patch * plane));
    run_on_host(patch * plane, cuda_detail::im2col_op<double>{col.data(), x.data(), s});
    double worst = 0;
    for (std::int64_t co = 0; co < g.out_channels; ++co)
        for (std::int64_t oy = 0; oy < g.out_h; ++oy)
            for (std::int64_t ox = 0; ox < g.out_w; ++ox) {
                double direct = 0, via_col = 0;
                for (std::int64_t c = 0; c < g.in_channels; ++c)
                    for (std::int64_t i = 0; i < 3; ++i)
                        for (std::int64_t j = 0; j < 3; ++j) {
                            const std::int64_t y = oy * 2 - 1 + i, xx = ox - 1 + j;
                            const double wv = w[static_cast<std::size_t>(((co * g.in_channels + c) * 3 + i) * 3 + j)];
                            if (y >= 0 && y < g.in_h && xx >= 0 && xx < g.in_w) direct += wv * x[static_cast<std::size_t>((c * g.in_h + y) * g.in_w + xx)];
                            via_col += wv * col[static_cast<std::size_t>(((c * 3 + i) * 3 + j) * plane + oy * g.out_w + ox)];
                        }
                worst = std::max(worst, std::abs(direct - via_col));
            }
    BOOST_TEST(worst < 1e-12);
    const auto c2 = random_values(col.size(), 62);
    std::vector<double> back(x.size());
    run_on_host(static_cast<std::int64_t>(x.size()), cuda_detail::col2im_op<double>{back.data(), c2.data(), s});
    BOOST_TEST(dot(col, c2) == dot(x, back), boost::test_tools::tolerance(1e-12));
}

// The batch norm jobs and maps on the host against the cpu kernels (themselves checked against
// PyTorch in tests/test_norm.cpp): statistics, normalization, backward in both modes, the running
// statistics. Channels of 2·5 and 3·150 values (more than a row's threads).
BOOST_AUTO_TEST_CASE(batch_norm_jobs_are_the_cpu_kernels) {
    for (std::int64_t inner : {5, 150}) {
        BOOST_TEST_CONTEXT("inner " << inner) {
            const std::int64_t n = 2 + (inner > 5), channels = 3, count = n * inner;
            const auto x = random_values(static_cast<std::size_t>(n * channels * inner), 51, 1.5, 3.0);
            const auto dy = random_values(x.size(), 52);
            const auto w = random_values(channels, 53, 0.3, 1.0), b = random_values(channels, 54, 0.2);
            std::vector<double> mean(channels), var(channels), rstd(channels), cmean(channels), cvar(channels), crstd(channels);
            cuda_detail::reduce_rows_on_host(cuda_detail::batch_norm_statistics_job<double>{mean.data(), var.data(), rstd.data(), x.data(), n,
                                                                                            channels, inner, 1e-5},
                                             channels, count);
            batch_norm_kernels<cpu>::statistics(cmean.data(), cvar.data(), crstd.data(), x.data(), n, channels, inner, 1e-5);
            BOOST_TEST(mean == cmean, boost::test_tools::tolerance(1e-12) << boost::test_tools::per_element());
            BOOST_TEST(var == cvar, boost::test_tools::tolerance(1e-10) << boost::test_tools::per_element());
            BOOST_TEST(rstd == crstd, boost::test_tools::tolerance(1e-10) << boost::test_tools::per_element());

            std::vector<double> y(x.size()), cy(x.size());
            run_on_host(static_cast<std::int64_t>(x.size()),
                        cuda_detail::batch_norm_normalize_op<double>{y.data(), x.data(), cmean.data(), crstd.data(), w.data(), b.data(), channels, inner});
            batch_norm_kernels<cpu>::normalize(cy.data(), x.data(), cmean.data(), crstd.data(), w.data(), b.data(), n, channels, inner);
            BOOST_TEST(y == cy, boost::test_tools::per_element());

            for (const bool batch_statistics : {true, false}) {
                std::vector<double> dx(x.size()), cdx(x.size()), dw(channels, 0.5), db(channels, -0.5), cdw(dw), cdb(db);
                cuda_detail::reduce_rows_on_host(cuda_detail::batch_norm_backward_job<double>{dx.data(), dw.data(), db.data(), dy.data(), x.data(),
                                                                                              cmean.data(), crstd.data(), w.data(), n, channels,
                                                                                              inner, batch_statistics},
                                                 channels, count);
                batch_norm_kernels<cpu>::backward(cdx.data(), cdw.data(), cdb.data(), dy.data(), x.data(), cmean.data(), crstd.data(), w.data(),
                                                  n, channels, inner, batch_statistics);
                BOOST_TEST(dx == cdx, boost::test_tools::tolerance(1e-12) << boost::test_tools::per_element());
                BOOST_TEST(dw == cdw, boost::test_tools::tolerance(1e-12) << boost::test_tools::per_element());
                BOOST_TEST(db == cdb, boost::test_tools::tolerance(1e-12) << boost::test_tools::per_element());
            }

            std::vector<double> rm{0.1, 0.2, 0.3}, rv{1.0, 2.0, 0.5}, crm(rm), crv(rv);
            run_on_host(channels, cuda_detail::running_statistics_op<double>{rm.data(), rv.data(), cmean.data(), cvar.data(), 0.1,
                                                                             double(count) / double(count - 1)});
            batch_norm_kernels<cpu>::update_running(crm.data(), crv.data(), cmean.data(), cvar.data(), channels, 0.1, count);
            BOOST_TEST(rm == crm, boost::test_tools::per_element());
            BOOST_TEST(rv == crv, boost::test_tools::per_element());
        }
    }
}

BOOST_AUTO_TEST_CASE(channel_norm_maps_are_the_cpu_kernels) {
    const std::int64_t n = 2, channels = 5, inner = 7;
    auto x = random_values(static_cast<std::size_t>(n * channels * inner), 61);
    for (std::int64_t c = 0; c < channels; ++c) x[static_cast<std::size_t>(c * inner + 3)] = 0.0;  // a zero vector: norm 0
    const auto dy = random_values(x.size(), 62);
    std::vector<double> y(x.size()), cy(x.size()), norm(n * inner), cnorm(n * inner), dx(x.size()), cdx(x.size());
    run_on_host(n * inner, cuda_detail::channel_norm_forward_op<double>{y.data(), norm.data(), x.data(), channels, inner, 1e-10});
    channel_norm_kernels<cpu>::forward(cy.data(), cnorm.data(), x.data(), n, channels, inner, 1e-10);
    // Equal up to the compilers' contraction of products into FMAs.
    BOOST_TEST(y == cy, boost::test_tools::tolerance(1e-14) << boost::test_tools::per_element());
    BOOST_TEST(norm == cnorm, boost::test_tools::tolerance(1e-14) << boost::test_tools::per_element());
    run_on_host(n * inner, cuda_detail::channel_norm_backward_op<double>{dx.data(), dy.data(), x.data(), cnorm.data(), channels, inner, 1e-10});
    channel_norm_kernels<cpu>::backward(cdx.data(), dy.data(), x.data(), cnorm.data(), n, channels, inner, 1e-10);
    BOOST_TEST(dx == cdx, boost::test_tools::tolerance(1e-13) << boost::test_tools::per_element());
}

// Pooling with LPIPS' and VGG's windows (2, stride 2) and overlapping padded ones (3, stride 2,
// padding 1, and 3, stride 1): forward and the gathered max-pool backward equal the cpu's
// scatter, ties included (a constant region: the first element of each window wins).
BOOST_AUTO_TEST_CASE(pool_maps_are_the_cpu_kernels) {
    struct shape {
        std::int64_t kernel, stride, padding;
    };
    for (const auto s : {shape{2, 2, 0}, shape{3, 2, 1}, shape{3, 1, 0}, shape{3, 1, 1}}) {
        BOOST_TEST_CONTEXT("kernel " << s.kernel << " stride " << s.stride << " padding " << s.padding) {
            pool2d_geometry g{.planes = 3, .in_h = 9, .in_w = 8, .kernel = s.kernel, .stride = s.stride, .padding = s.padding};
            g.out_h = (g.in_h + 2 * g.padding - g.kernel) / g.stride + 1;
            g.out_w = (g.in_w + 2 * g.padding - g.kernel) / g.stride + 1;
            auto x = random_values(static_cast<std::size_t>(g.planes * g.in_h * g.in_w), 71);
            for (std::size_t i = 0; i < 12; ++i) x[i] = 0.25;  // ties
            const auto dy = random_values(static_cast<std::size_t>(g.planes * g.out_h * g.out_w), 72);
            std::vector<double> y(dy.size()), cy(dy.size()), a(dy.size()), ca(dy.size()), dx(x.size()), cdx(x.size());
            run_on_host(static_cast<std::int64_t>(y.size()), cuda_detail::max_pool_op<double>{y.data(), x.data(), g});
            pool_kernels<cpu>::max_pool2d(cy.data(), x.data(), g);
            BOOST_TEST(y == cy, boost::test_tools::per_element());
            run_on_host(static_cast<std::int64_t>(a.size()), cuda_detail::avg_pool_op<double>{a.data(), x.data(), g, true});
            pool_kernels<cpu>::avg_pool2d(ca.data(), x.data(), g, true);
            BOOST_TEST(a == ca, boost::test_tools::tolerance(1e-14) << boost::test_tools::per_element());
            run_on_host(static_cast<std::int64_t>(x.size()), cuda_detail::max_pool_backward_op<double>{dx.data(), dy.data(), x.data(), g});
            pool_kernels<cpu>::max_pool2d_backward(cdx.data(), dy.data(), x.data(), g);
            BOOST_TEST(dx == cdx, boost::test_tools::tolerance(1e-14) << boost::test_tools::per_element());
        }
    }
}

namespace {

/// One attention problem: operands in their layout (tokens-major (B, H, N, d), or channels-first
/// (B, d, N) with one head), and attention in double from the same values.
struct attention_case {
    std::int64_t batch, heads, queries, keys, key_dim, value_dim;
    bool channels_first;
    bool packed = false;  // DiT's (B, N, 3·D) qkv: q, k, v each read from a buffer of that shape

    attention_layout layout() const {
        attention_layout l{batch, heads, queries, keys, key_dim, value_dim, {}, {}, {}, {}};
        const auto operand = [&](std::int64_t tokens, std::int64_t width) {
            return channels_first ? attention_operand{width * tokens, 0, tokens} : attention_operand{heads * tokens * width, tokens * width, width};
        };
        l.q = operand(queries, key_dim);
        l.k = operand(keys, key_dim);
        l.v = operand(keys, value_dim);
        l.out = operand(queries, value_dim);
        if (packed) {  // heads of key_dim inside rows of 3·D, D = heads·key_dim (queries = keys)
            const std::int64_t D = heads * key_dim;
            l.q = l.k = l.v = attention_operand{queries * 3 * D, key_dim, 3 * D};
            l.out = attention_operand{queries * D, key_dim, D};
        }
        return l;
    }
    /// Elements of the buffer an operand is read from (q, k, v: packed rows of 3·D).
    std::size_t elements(std::int64_t tokens, std::int64_t width) const {
        if (packed) return static_cast<std::size_t>(batch * tokens * 3 * heads * width);
        return static_cast<std::size_t>(batch * heads * tokens * width);
    }
};

struct attention_reference {
    std::vector<double> out, log_sum, dq, dk, dv;
};

/// softmax(scale·q·kᵀ)·v per (batch, head) and its backward, in double, reading the operands through the layout.
attention_reference reference_attention(const attention_case& c, const std::vector<float>& q, const std::vector<float>& k,
                                        const std::vector<float>& v, const std::vector<float>& dout, double scale) {
    const auto l = c.layout();
    const auto at = [&](const attention_operand& o, std::int64_t b, std::int64_t h, std::int64_t token, std::int64_t feature) {
        return static_cast<std::size_t>(b * o.batch_stride + h * o.head_stride +
                                        (c.channels_first ? feature * o.outer_stride + token : token * o.outer_stride + feature));
    };
    attention_reference r{std::vector<double>(dout.size()), std::vector<double>(static_cast<std::size_t>(c.batch * c.heads * c.queries)),
                          std::vector<double>(q.size()), std::vector<double>(k.size()), std::vector<double>(v.size())};
    for (std::int64_t b = 0; b < c.batch; ++b)
        for (std::int64_t h = 0; h < c.heads; ++h) {
            std::vector<double> P(static_cast<std::size_t>(c.queries * c.keys)), dS(P.size());
            for (std::int64_t i = 0; i < c.queries; ++i) {
                double max = -INFINITY;
                for (std::int64_t j = 0; j < c.keys; ++j) {
                    double s = 0;
                    for (std::int64_t d = 0; d < c.key_dim; ++d) s += double(q[at(l.q, b, h, i, d)]) * k[at(l.k, b, h, j, d)];
                    P[i * c.keys + j] = scale * s;
                    max = std::max(max, scale * s);
                }
                double sum = 0;
                for (std::int64_t j = 0; j < c.keys; ++j) sum += std::exp(P[i * c.keys + j] - max);
                r.log_sum[(b * c.heads + h) * c.queries + i] = max + std::log(sum);
                for (std::int64_t j = 0; j < c.keys; ++j) P[i * c.keys + j] = std::exp(P[i * c.keys + j] - max) / sum;
                for (std::int64_t d = 0; d < c.value_dim; ++d) {
                    double o = 0;
                    for (std::int64_t j = 0; j < c.keys; ++j) o += P[i * c.keys + j] * v[at(l.v, b, h, j, d)];
                    r.out[at(l.out, b, h, i, d)] = o;
                }
                // dS = scale·P∘(dP − Σ_j dP∘P), dP = dO·vᵀ
                double row = 0;
                for (std::int64_t j = 0; j < c.keys; ++j) {
                    double dp = 0;
                    for (std::int64_t d = 0; d < c.value_dim; ++d) dp += double(dout[at(l.out, b, h, i, d)]) * v[at(l.v, b, h, j, d)];
                    dS[i * c.keys + j] = dp;
                    row += dp * P[i * c.keys + j];
                }
                for (std::int64_t j = 0; j < c.keys; ++j) dS[i * c.keys + j] = scale * P[i * c.keys + j] * (dS[i * c.keys + j] - row);
            }
            for (std::int64_t i = 0; i < c.queries; ++i)
                for (std::int64_t j = 0; j < c.keys; ++j) {
                    for (std::int64_t d = 0; d < c.key_dim; ++d) {
                        r.dq[at(l.q, b, h, i, d)] += dS[i * c.keys + j] * k[at(l.k, b, h, j, d)];
                        r.dk[at(l.k, b, h, j, d)] += dS[i * c.keys + j] * q[at(l.q, b, h, i, d)];
                    }
                    for (std::int64_t d = 0; d < c.value_dim; ++d)
                        r.dv[at(l.v, b, h, j, d)] += P[i * c.keys + j] * dout[at(l.out, b, h, i, d)];
                }
        }
    return r;
}

/// max |a − b| / max |b|
double relative_error(const std::vector<float>& a, const std::vector<double>& b) {
    double err = 0, size = 0;
    for (std::size_t i = 0; i < b.size(); ++i) {
        err = std::max(err, std::abs(double(a[i]) - b[i]));
        size = std::max(size, std::abs(b[i]));
    }
    return std::isfinite(err) ? err / size : INFINITY;  // a value never written (NaN) fails
}

} // namespace

// The fused attention kernels' steps, run on the host in the kernel's order (every thread stages
// its share of a tile, then every thread consumes it), against attention in double: the online
// softmax across tiles (scores scaled up, so the running maximum moves), partly filled tiles and
// row blocks, key and value widths that differ and fall short of the register width (64 and 128),
// heads and batches, the channels-first layout, every output written (they start as NaN). fp32
// within 1e-5 of the largest value; bf16_mixed within bf16's error and not at fp32's agreement,
// so that the rounding is shown to happen.
BOOST_AUTO_TEST_CASE(fused_attention_steps_match_attention_in_double) {
    const attention_case cases[] = {{2, 3, 70, 45, 40, 24, false}, {1, 2, 33, 100, 72, 72, false}, {2, 1, 49, 49, 96, 96, true},
                                    {1, 1, 1, 3, 8, 8, false}, {2, 3, 40, 40, 16, 16, false, true}};
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT("B " << c.batch << " H " << c.heads << " Nq " << c.queries << " Nk " << c.keys << " dk " << c.key_dim
                                << " dv " << c.value_dim << (c.channels_first ? " channels-first" : "") << (c.packed ? " packed" : "")) {
            const auto l = c.layout();
            const auto random = [](std::size_t n, unsigned seed, float amplitude) {
                std::mt19937 gen(seed);
                std::normal_distribution<float> normal(0.0f, amplitude);
                std::vector<float> x(n);
                for (auto& e : x) e = normal(gen);
                return x;
            };
            const auto q = random(c.elements(c.queries, c.key_dim), 1, 2.5f), k = random(c.elements(c.keys, c.key_dim), 2, 1.0f);
            const auto v = random(c.elements(c.keys, c.value_dim), 3, 1.0f);
            const auto dout = random(static_cast<std::size_t>(c.batch * c.heads * c.queries * c.value_dim), 4, 1.0f);
            const double scale = 1.0 / std::sqrt(double(c.key_dim));
            const auto ref = reference_attention(c, q, k, v, dout, scale);
            std::vector<double> errors[2];
            for (const bool round : {false, true}) {
                // NaN: an output the kernels never write fails (in the packed buffers, only the
                // operand's own columns are written: they start at 0, as the reference's others).
                const float unwritten = c.packed ? 0.0f : NAN;
                std::vector<float> out(dout.size(), NAN), log_sum(ref.log_sum.size(), NAN), dq(q.size(), unwritten),
                    dk(k.size(), unwritten), dv(v.size(), unwritten), row_dot(log_sum.size(), NAN);
                const auto run = [&]<bool Round>(std::bool_constant<Round>) {
                    cuda_detail::fused_attention_forward_run<Round>(cuda_detail::fused_rows_on_host{}, out.data(), log_sum.data(), q.data(),
                                                                    k.data(), v.data(), l, float(scale), c.channels_first);
                    cuda_detail::fused_attention_backward_run<Round>(cuda_detail::fused_rows_on_host{}, dq.data(), dk.data(), dv.data(),
                                                                     row_dot.data(), dout.data(), q.data(), k.data(), v.data(),
                                                                     log_sum.data(), l, float(scale), c.channels_first);
                };
                if (round) run(std::true_type{});
                else run(std::false_type{});
                errors[round] = {relative_error(out, ref.out), relative_error(log_sum, ref.log_sum), relative_error(dq, ref.dq),
                                 relative_error(dk, ref.dk), relative_error(dv, ref.dv)};
            }
            const char* names[] = {"out", "log_sum", "dq", "dk", "dv"};
            for (std::size_t i = 0; i < 5; ++i) {
                BOOST_TEST_MESSAGE(names[i] << ": fp32 " << errors[0][i] << ", bf16 " << errors[1][i]);
                BOOST_TEST(errors[0][i] < 1e-5, names[i] << " fp32: " << errors[0][i]);
                BOOST_TEST(errors[1][i] < 3e-2, names[i] << " bf16: " << errors[1][i]);
                BOOST_TEST(errors[1][i] > 10 * errors[0][i], names[i] << " bf16 " << errors[1][i] << " vs fp32 " << errors[0][i]);
            }
        }
    }
}

// The fused backward against central differences of the fused forward itself (its host steps):
// ⟨dq, e_q⟩ + ⟨dk, e_k⟩ + ⟨dv, e_v⟩ = d/dh ⟨out(q + h·e_q, k + h·e_k, v + h·e_v), dout⟩, for both
// register widths.
BOOST_AUTO_TEST_CASE(fused_attention_gradients_match_central_differences) {
    for (const attention_case c : {attention_case{1, 2, 37, 45, 24, 40, false}, attention_case{2, 1, 30, 30, 72, 72, false}}) {
        BOOST_TEST_CONTEXT("dk " << c.key_dim << " dv " << c.value_dim) {
            const auto l = c.layout();
            const auto random = [](std::size_t n, unsigned seed) {
                std::mt19937 gen(seed);
                std::normal_distribution<double> normal(0.0, 1.0);
                std::vector<double> x(n);
                for (auto& e : x) e = normal(gen);
                return x;
            };
            const auto q = random(c.elements(c.queries, c.key_dim), 11), k = random(c.elements(c.keys, c.key_dim), 12);
            const auto v = random(c.elements(c.keys, c.value_dim), 13);
            const auto dout = random(static_cast<std::size_t>(c.batch * c.heads * c.queries * c.value_dim), 14);
            const auto eq = random(q.size(), 15), ek = random(k.size(), 16), ev = random(v.size(), 17);
            const float scale = float(1.0 / std::sqrt(double(c.key_dim)));
            const auto as_float = [](const std::vector<double>& x, const std::vector<double>& e, double h) {
                std::vector<float> out(x.size());
                for (std::size_t i = 0; i < x.size(); ++i) out[i] = float(x[i] + h * e[i]);
                return out;
            };
            const auto objective = [&](double h) {  // ⟨out, dout⟩ at the shifted operands
                const auto qs = as_float(q, eq, h), ks = as_float(k, ek, h), vs = as_float(v, ev, h);
                std::vector<float> out(dout.size()), log_sum(static_cast<std::size_t>(c.batch * c.heads * c.queries));
                cuda_detail::fused_attention_forward_run<false>(cuda_detail::fused_rows_on_host{}, out.data(), log_sum.data(), qs.data(),
                                                                ks.data(), vs.data(), l, scale, false);
                double sum = 0;
                for (std::size_t i = 0; i < out.size(); ++i) sum += double(out[i]) * dout[i];
                return sum;
            };
            const auto qf = as_float(q, eq, 0), kf = as_float(k, ek, 0), vf = as_float(v, ev, 0), df = as_float(dout, dout, 0);
            std::vector<float> out(df.size()), log_sum(static_cast<std::size_t>(c.batch * c.heads * c.queries)), dq(q.size()),
                dk(k.size()), dv(v.size()), row_dot(log_sum.size());
            cuda_detail::fused_attention_forward_run<false>(cuda_detail::fused_rows_on_host{}, out.data(), log_sum.data(), qf.data(),
                                                            kf.data(), vf.data(), l, scale, false);
            cuda_detail::fused_attention_backward_run<false>(cuda_detail::fused_rows_on_host{}, dq.data(), dk.data(), dv.data(),
                                                             row_dot.data(), df.data(), qf.data(), kf.data(), vf.data(), log_sum.data(), l,
                                                             scale, false);
            double analytic = 0;
            for (std::size_t i = 0; i < q.size(); ++i) analytic += double(dq[i]) * eq[i];
            for (std::size_t i = 0; i < k.size(); ++i) analytic += double(dk[i]) * ek[i];
            for (std::size_t i = 0; i < v.size(); ++i) analytic += double(dv[i]) * ev[i];
            const double h = 1e-2, numeric = (objective(h) - objective(-h)) / (2 * h);
            BOOST_TEST_MESSAGE("directional derivative: analytic " << analytic << ", central differences " << numeric);
            BOOST_TEST(analytic == numeric, boost::test_tools::tolerance(2e-3));
        }
    }
}

namespace {

/// Slots in host memory, for the bookkeeping of deferred index checks without a device.
struct host_fault_slots {
    std::vector<unsigned long long>* values;
    void clear(std::size_t i) const { (*values)[i] = cuda_detail::no_index_fault; }
    unsigned long long* address(std::size_t i) const { return values->data() + i; }
    void read(std::size_t n, unsigned long long* out) const { std::copy_n(values->begin(), n, out); }
};

} // namespace

// The deferred index check: the functor keeps the first position outside [0, rows) whatever order
// the positions run in (atomic minimum of position·2³² + index), negative and too-large indices
// alike; the bookkeeping throws for the first failing check in launch order, naming its op, the
// index and position, frees every slot when it reads them (a second read throws nothing), and
// refuses a check past its capacity until the slots are read.
BOOST_AUTO_TEST_CASE(deferred_index_checks_report_the_first_bad_index_at_the_next_read) {
    BOOST_TEST(cuda_detail::fault_position(cuda_detail::pack_index_fault(5, -3)) == 5);
    BOOST_TEST(cuda_detail::fault_value(cuda_detail::pack_index_fault(5, -3)) == -3);
    BOOST_TEST(cuda_detail::pack_index_fault(4, 2000000000) < cuda_detail::pack_index_fault(5, -3));

    std::vector<unsigned long long> storage(3, 0);
    cuda_detail::deferred_index_checks<host_fault_slots> checks(host_fault_slots{&storage}, 3);
    const std::vector<std::int32_t> good = {0, 4, 2}, bad = {1, 9, 2, -1, 5, 7};
    const auto run_backwards = [](std::int64_t n, auto op) {  // positions in reverse: the minimum must still win
        for (std::int64_t i = n - 1; i >= 0; --i) op(i);
    };
    auto* first = checks.claim("embedding", "index", 3, 5);
    BOOST_TEST(*first == cuda_detail::no_index_fault);
    run_backwards(3, cuda_detail::index_check_op{first, good.data(), 5});
    auto* second = checks.claim("label_embedder", "label", 6, 5);
    run_backwards(6, cuda_detail::index_check_op{second, bad.data(), 5});
    auto* third = checks.claim("embedding_backward", "index", 6, 5);
    run_on_host(6, cuda_detail::index_check_op{third, bad.data(), 5});
    BOOST_TEST(checks.claim("one too many", "index", 1, 1) == nullptr);
    BOOST_TEST(checks.pending() == 3u);
    std::string message;
    try {
        checks.raise_pending();
    } catch (const shape_error& e) {
        message = e.what();
    }
    BOOST_TEST(message.find("label_embedder: label 9 at position 1 of 6 is outside [0, 5)") != std::string::npos, message);
    BOOST_TEST(checks.pending() == 0u);
    BOOST_CHECK_NO_THROW(checks.raise_pending());
    // Slots are reused after the read, and cleared for their new check.
    auto* again = checks.claim("embedding", "index", 3, 5);
    BOOST_TEST(again == storage.data());
    BOOST_TEST(*again == cuda_detail::no_index_fault);
    run_on_host(3, cuda_detail::index_check_op{again, good.data(), 5});
    BOOST_CHECK_NO_THROW(checks.raise_pending());
    // A negative index is outside too.
    const std::vector<std::int32_t> negative = {0, -2};
    auto* slot = checks.claim("embedding", "index", 2, 5);
    run_on_host(2, cuda_detail::index_check_op{slot, negative.data(), 5});
    BOOST_CHECK_EXCEPTION(checks.raise_pending(), shape_error, [](const shape_error& e) {
        return std::string(e.what()).find("index -2 at position 1") != std::string::npos;
    });
}

// Clipping by the global norm on the device, replayed on the host: the chunk sums (the kernel's
// tree), their sum in chunk order, clip_factor_kernel's arithmetic and the multi-tensor scaling.
// Against the cpu backend: the same norm within double rounding (another summation order), and
// then, given the norm, the same factor and the same scaled values bit for bit. With a large
// max_norm nothing is scaled; with a non-finite gradient nothing is either.
BOOST_AUTO_TEST_CASE(clipping_on_the_device_is_the_cpu_clipping) {
    const std::vector<std::int64_t> lengths = {70000, 3, 40000};
    std::mt19937 gen(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (const double max_norm : {1.0, 1e9}) {
        for (const bool poisoned : {false, true}) {
            BOOST_TEST_CONTEXT("max_norm " << max_norm << (poisoned ? ", a NaN gradient" : "")) {
                std::vector<std::vector<float>> on_cpu, replica;
                for (const auto n : lengths) {
                    std::vector<float> g(static_cast<std::size_t>(n));
                    for (auto& x : g) x = normal(gen);
                    on_cpu.push_back(g);
                }
                if (poisoned) on_cpu[1][2] = NAN;
                replica = on_cpu;
                std::vector<float*> cpu_pointers, replica_pointers;
                for (auto& g : on_cpu) cpu_pointers.push_back(g.data());
                for (auto& g : replica) replica_pointers.push_back(g.data());
                const auto cpu_result = optim_kernels<cpu>::clip_by_global_norm_many(std::span<float* const>(cpu_pointers),
                                                                                      std::span<const std::int64_t>(lengths), max_norm);
                // The device's steps on the host.
                const std::vector<const float*> read(replica_pointers.begin(), replica_pointers.end());
                const double total = cuda_detail::sum_of_squares_many_on_host(std::span<const float* const>(read),
                                                                              std::span<const std::int64_t>(lengths));
                const double result[2] = {std::sqrt(total), clip_factor(std::sqrt(total), max_norm)};
                std::vector<cuda_detail::scaled_tensor<float>> entries;
                for (std::size_t i = 0; i < lengths.size(); ++i) entries.push_back({replica_pointers[i], lengths[i]});
                cuda_detail::multi_tensor_apply_on_host(std::span<const cuda_detail::scaled_tensor<float>>(entries),
                                                        cuda_detail::scale_by_clip_factor_op<float>{result});
                if (poisoned) {
                    BOOST_TEST(std::isnan(result[0]));
                    BOOST_TEST(std::isnan(cpu_result[0]));
                    BOOST_TEST(result[1] == 1.0);
                    BOOST_TEST(cpu_result[1] == 1.0);
                } else {
                    BOOST_TEST(result[0] == cpu_result[0], boost::test_tools::tolerance(1e-14));
                    BOOST_TEST(result[1] == clip_factor(cpu_result[0], max_norm), boost::test_tools::tolerance(1e-14));
                    BOOST_TEST((max_norm < 10 ? result[1] < 1.0 : result[1] == 1.0));
                }
                // Scaled by the same factor, element for element: the cpu's values when the factor
                // agrees exactly (it does whenever nothing is scaled).
                if (result[1] == cpu_result[1])
                    for (std::size_t i = 0; i < lengths.size(); ++i)  // bit patterns (the NaN too)
                        BOOST_TEST(std::memcmp(replica[i].data(), on_cpu[i].data(), replica[i].size() * sizeof(float)) == 0);
                else
                    BOOST_TEST(std::abs(result[1] - cpu_result[1]) < 1e-15);
            }
        }
    }
}

// The multi-tensor tables kept by content: the same bytes find the same entry, other bytes (one
// length or one pointer apart) do not, and the least recently used entry makes room.
BOOST_AUTO_TEST_CASE(tables_are_kept_by_their_content) {
    cuda_detail::content_cache<int> cache(2);
    const auto bytes = [](std::vector<std::int64_t> v) {
        std::vector<std::byte> b(v.size() * sizeof(std::int64_t));
        std::memcpy(b.data(), v.data(), b.size());
        return b;
    };
    const auto a = bytes({1, 2, 3}), b = bytes({1, 2, 4}), c = bytes({1, 2}), d = bytes({9});
    BOOST_TEST(cache.find(a) == nullptr);
    cache.insert(a, 10);
    cache.insert(b, 20);
    BOOST_TEST(*cache.find(a) == 10);
    BOOST_TEST(*cache.find(b) == 20);
    BOOST_TEST(cache.find(c) == nullptr);  // a prefix is other content
    BOOST_TEST(*cache.find(a) == 10);      // a used last: b is the oldest
    cache.insert(d, 40);
    BOOST_TEST(cache.size() == 2u);
    BOOST_TEST(cache.find(b) == nullptr);
    BOOST_TEST(*cache.find(a) == 10);
    BOOST_TEST(*cache.find(d) == 40);
}

namespace {

/// A geometry as ops::conv2d_check makes it; padding (top, bottom, left, right).
conv2d_geometry conv_geometry(std::int64_t batch, std::int64_t cin, std::int64_t h, std::int64_t w, std::int64_t cout, std::int64_t kernel,
                              std::int64_t stride, std::array<std::int64_t, 4> padding) {
    conv2d_geometry g;
    g.batch = batch, g.in_channels = cin, g.in_h = h, g.in_w = w, g.out_channels = cout, g.kernel_h = kernel, g.kernel_w = kernel;
    g.stride_h = g.stride_w = stride;
    g.pad_top = padding[0], g.pad_bottom = padding[1], g.pad_left = padding[2], g.pad_right = padding[3];
    g.out_h = (h + g.pad_top + g.pad_bottom - kernel) / stride + 1;
    g.out_w = (w + g.pad_left + g.pad_right - kernel) / stride + 1;
    return g;
}

/// y (N, Cout, Ho, Wo) of the convolution written out, zero padding per side as in g.
std::vector<double> written_out_conv(const std::vector<double>& x, const std::vector<double>& w, const conv2d_geometry& g) {
    std::vector<double> y(static_cast<std::size_t>(g.batch * g.out_channels * g.out_plane()), 0.0);
    for (std::int64_t n = 0; n < g.batch; ++n)
        for (std::int64_t co = 0; co < g.out_channels; ++co)
            for (std::int64_t oy = 0; oy < g.out_h; ++oy)
                for (std::int64_t ox = 0; ox < g.out_w; ++ox) {
                    double s = 0;
                    for (std::int64_t c = 0; c < g.in_channels; ++c)
                        for (std::int64_t i = 0; i < g.kernel_h; ++i)
                            for (std::int64_t j = 0; j < g.kernel_w; ++j) {
                                const std::int64_t yy = oy * g.stride_h - g.pad_top + i, xx = ox * g.stride_w - g.pad_left + j;
                                if (yy < 0 || yy >= g.in_h || xx < 0 || xx >= g.in_w) continue;
                                s += w[static_cast<std::size_t>(((co * g.in_channels + c) * g.kernel_h + i) * g.kernel_w + j)] *
                                     x[static_cast<std::size_t>(((n * g.in_channels + c) * g.in_h + yy) * g.in_w + xx)];
                            }
                    y[static_cast<std::size_t>(((n * g.out_channels + co) * g.out_h + oy) * g.out_w + ox)] = s;
                }
    return y;
}

} // namespace

// What cuDNN is given: the smaller pad of each axis as its symmetric padding, the rest padded
// explicitly into a copy of x; cuDNN's output size formula on that is the geometry's. The
// convolution of the padded copy with the symmetric padding is the asymmetric convolution, and
// the crop that takes its dx back to x is the padding's adjoint.
BOOST_AUTO_TEST_CASE(cudnn_problems_split_asymmetric_padding_into_a_symmetric_part_and_a_padded_copy) {
    struct conv_case {
        const char* name;
        conv2d_geometry g;
        std::int64_t pad_h, pad_w;
        std::array<std::int64_t, 4> extra;  // top, bottom, left, right
    };
    const conv_case cases[] = {
        {"3x3 padding 1", conv_geometry(2, 3, 9, 8, 4, 3, 1, {1, 1, 1, 1}), 1, 1, {0, 0, 0, 0}},
        {"LDM downsample (0, 1, 0, 1), stride 2", conv_geometry(2, 3, 9, 8, 4, 3, 2, {0, 1, 0, 1}), 0, 0, {0, 1, 0, 1}},
        {"top-heavy (2, 1, 0, 3)", conv_geometry(1, 2, 6, 5, 3, 3, 1, {2, 1, 0, 3}), 1, 0, {1, 0, 0, 3}},
        {"1x1 stride 2", conv_geometry(2, 3, 7, 6, 4, 1, 2, {0, 0, 0, 0}), 0, 0, {0, 0, 0, 0}},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c.name) {
            const conv2d_geometry& g = c.g;
            const auto p = cuda_detail::cudnn_problem(g);
            BOOST_TEST(p.pad_h == c.pad_h);
            BOOST_TEST(p.pad_w == c.pad_w);
            BOOST_TEST(p.extra.top == c.extra[0]);
            BOOST_TEST(p.extra.bottom == c.extra[1]);
            BOOST_TEST(p.extra.left == c.extra[2]);
            BOOST_TEST(p.extra.right == c.extra[3]);
            BOOST_TEST(p.pads_explicitly() == (g.pad_top != g.pad_bottom || g.pad_left != g.pad_right));
            BOOST_TEST(p.in_h == g.in_h + c.extra[0] + c.extra[1]);
            BOOST_TEST(p.in_w == g.in_w + c.extra[2] + c.extra[3]);
            // cuDNN's output size for a symmetric padding: (in + 2·pad − k) / stride + 1.
            BOOST_TEST((p.in_h + 2 * p.pad_h - g.kernel_h) / g.stride_h + 1 == g.out_h);
            BOOST_TEST((p.in_w + 2 * p.pad_w - g.kernel_w) / g.stride_w + 1 == g.out_w);

            const auto x = random_values(static_cast<std::size_t>(g.batch * g.in_channels * g.in_plane()), 80);
            const auto w = random_values(static_cast<std::size_t>(g.out_channels * g.patch()), 81);
            std::vector<double> padded(static_cast<std::size_t>(g.batch * g.in_channels * p.in_h * p.in_w), -1.0);
            run_on_host(static_cast<std::int64_t>(padded.size()), cuda_detail::pad_planes_op<double>{padded.data(), x.data(), p.extra});
            conv2d_geometry symmetric = g;
            symmetric.in_h = p.in_h, symmetric.in_w = p.in_w;
            symmetric.pad_top = symmetric.pad_bottom = p.pad_h;
            symmetric.pad_left = symmetric.pad_right = p.pad_w;
            const auto want = written_out_conv(x, w, g), got = written_out_conv(padded, w, symmetric);
            BOOST_TEST(got == want, boost::test_tools::tolerance(1e-13) << boost::test_tools::per_element());

            // The crop of the padded copy is x, and ⟨pad(x), z⟩ = ⟨x, crop(z)⟩.
            std::vector<double> cropped(x.size(), -1.0);
            run_on_host(static_cast<std::int64_t>(x.size()), cuda_detail::crop_planes_op<double>{cropped.data(), padded.data(), p.extra});
            BOOST_TEST(cropped == x, boost::test_tools::per_element());
            const auto z = random_values(padded.size(), 82);
            run_on_host(static_cast<std::int64_t>(x.size()), cuda_detail::crop_planes_op<double>{cropped.data(), z.data(), p.extra});
            BOOST_TEST(dot(padded, z) == dot(x, cropped), boost::test_tools::tolerance(1e-12));
        }
    }
}

// 1×1 stride-1 unpadded convolutions are products in every precision; other fp32 and double ones
// go to cuDNN, other bf16_mixed ones to im2col (cuDNN's legacy API has no bf16-in, fp32-out
// convolution); sizes cuDNN's descriptors reject go to im2col.
BOOST_AUTO_TEST_CASE(each_geometry_and_precision_takes_its_conv_path) {
    using cuda_detail::conv_path;
    using cuda_detail::choose_conv_path;
    const auto pointwise = conv_geometry(2, 8, 5, 6, 4, 1, 1, {0, 0, 0, 0});
    const auto three = conv_geometry(2, 8, 5, 6, 4, 3, 1, {1, 1, 1, 1});
    const auto downsample = conv_geometry(2, 8, 9, 8, 8, 3, 2, {0, 1, 0, 1});
    const auto strided_pointwise = conv_geometry(2, 8, 5, 6, 4, 1, 2, {0, 0, 0, 0});
    const auto padded_pointwise = conv_geometry(2, 8, 5, 6, 4, 1, 1, {1, 1, 1, 1});
    BOOST_TEST((choose_conv_path(pointwise, false) == conv_path::pointwise_gemm));
    BOOST_TEST((choose_conv_path(pointwise, true) == conv_path::pointwise_gemm));
    BOOST_TEST((choose_conv_path(three, false) == conv_path::cudnn));
    BOOST_TEST((choose_conv_path(three, true) == conv_path::im2col));
    BOOST_TEST((choose_conv_path(downsample, false) == conv_path::cudnn));
    BOOST_TEST((choose_conv_path(downsample, true) == conv_path::im2col));
    BOOST_TEST((choose_conv_path(strided_pointwise, false) == conv_path::cudnn));
    BOOST_TEST((choose_conv_path(padded_pointwise, false) == conv_path::cudnn));
    auto empty_batch = three;
    empty_batch.batch = 0;
    BOOST_TEST((choose_conv_path(empty_batch, false) == conv_path::im2col));
    auto no_inputs = pointwise;
    no_inputs.in_channels = 0;
    BOOST_TEST((choose_conv_path(no_inputs, false) == conv_path::im2col));
    // 2^31 elements or more in x, y or w: beyond cuDNN's int sizes.
    const auto huge = conv_geometry(64, 512, 256, 256, 64, 3, 1, {1, 1, 1, 1});
    BOOST_TEST(!cuda_detail::fits_cudnn_descriptors(huge));
    BOOST_TEST((choose_conv_path(huge, false) == conv_path::im2col));
    BOOST_TEST(cuda_detail::fits_cudnn_descriptors(downsample));
    // The explicit padding counts: a padded x just past the limit does not fit, though x does.
    const auto at_the_edge = conv_geometry(1, 1, 46340, 46340, 1, 3, 2, {0, 1, 0, 1});  // 46340² < 2^31 − 1 < 46341²
    BOOST_TEST(!cuda_detail::fits_cudnn_descriptors(at_the_edge));
}

// The algorithm cache's key: equal for the same call, different when any geometry field, the data
// type, the TF32 switch (float only) or the pass differs.
BOOST_AUTO_TEST_CASE(algorithm_keys_tell_every_geometry_field_apart) {
    using cuda_detail::algorithm_key;
    using cuda_detail::conv_pass;
    const auto g = conv_geometry(2, 3, 9, 8, 4, 3, 2, {0, 1, 0, 1});
    const auto base = algorithm_key(g, CUDNN_DATA_FLOAT, true, conv_pass::forward);
    BOOST_TEST((algorithm_key(g, CUDNN_DATA_FLOAT, true, conv_pass::forward) == base));
    using field = std::int64_t conv2d_geometry::*;
    const field fields[] = {
        &conv2d_geometry::batch,    &conv2d_geometry::in_channels, &conv2d_geometry::in_h,       &conv2d_geometry::in_w,
        &conv2d_geometry::out_channels, &conv2d_geometry::kernel_h, &conv2d_geometry::kernel_w,  &conv2d_geometry::stride_h,
        &conv2d_geometry::stride_w, &conv2d_geometry::pad_top,     &conv2d_geometry::pad_bottom, &conv2d_geometry::pad_left,
        &conv2d_geometry::pad_right, &conv2d_geometry::out_h,      &conv2d_geometry::out_w};
    std::set<cuda_detail::conv_algorithm_key> distinct{base};
    for (std::size_t f = 0; f < std::size(fields); ++f) {
        BOOST_TEST_CONTEXT("field " << f) {
            conv2d_geometry changed = g;
            changed.*fields[f] += 1;
            const auto key = algorithm_key(changed, CUDNN_DATA_FLOAT, true, conv_pass::forward);
            BOOST_TEST((key != base));
            distinct.insert(key);
        }
    }
    BOOST_TEST(distinct.size() == std::size(fields) + 1);  // the map's ordering tells them apart too
    BOOST_TEST((algorithm_key(g, CUDNN_DATA_DOUBLE, true, conv_pass::forward) != base));
    BOOST_TEST((algorithm_key(g, CUDNN_DATA_FLOAT, false, conv_pass::forward) != base));
    BOOST_TEST((algorithm_key(g, CUDNN_DATA_FLOAT, true, conv_pass::backward_data) != base));
    BOOST_TEST((algorithm_key(g, CUDNN_DATA_FLOAT, true, conv_pass::backward_filter) != base));
    // TF32 does not apply to double: one key for both settings.
    BOOST_TEST((algorithm_key(g, CUDNN_DATA_DOUBLE, true, conv_pass::forward) == algorithm_key(g, CUDNN_DATA_DOUBLE, false, conv_pass::forward)));
    BOOST_TEST((cuda_detail::requested_math(CUDNN_DATA_FLOAT, true) == CUDNN_TENSOR_OP_MATH));
    BOOST_TEST((cuda_detail::requested_math(CUDNN_DATA_FLOAT, false) == CUDNN_FMA_MATH));
    BOOST_TEST((cuda_detail::requested_math(CUDNN_DATA_DOUBLE, false) == CUDNN_DEFAULT_MATH));
}

// From the heuristics' list (best first): the first supported, deterministic algorithm within the
// workspace limit, else the first supported one; TF32 off forces FMA math; none usable names the
// pass and the geometry.
BOOST_AUTO_TEST_CASE(the_algorithm_choice_prefers_supported_deterministic_ones_within_the_workspace_limit) {
    using perf = cudnnConvolutionBwdFilterAlgoPerf_t;
    const auto entry = [](cudnnConvolutionBwdFilterAlgo_t algo, cudnnStatus_t status, std::size_t memory, bool deterministic) {
        perf p{};
        p.algo = algo, p.status = status, p.memory = memory, p.mathType = CUDNN_TENSOR_OP_MATH;
        p.determinism = deterministic ? CUDNN_DETERMINISTIC : CUDNN_NON_DETERMINISTIC;
        return p;
    };
    const auto g = conv_geometry(2, 3, 9, 8, 4, 3, 2, {0, 1, 0, 1});
    const std::size_t limit = 1000;
    const perf mixed[] = {entry(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, CUDNN_STATUS_NOT_SUPPORTED, 0, true),
                          entry(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, CUDNN_STATUS_SUCCESS, 0, false),
                          entry(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT, CUDNN_STATUS_SUCCESS, 5000, true),
                          entry(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3, CUDNN_STATUS_SUCCESS, 100, true)};
    const auto chosen = cuda_detail::pick_algorithm(mixed, 4, false, limit, cuda_detail::conv_pass::backward_filter, g);
    BOOST_TEST(chosen.algo == int(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3));
    BOOST_TEST((chosen.math == CUDNN_TENSOR_OP_MATH));
    BOOST_TEST(chosen.workspace_bytes == 100u);
    BOOST_TEST((cuda_detail::pick_algorithm(mixed, 4, true, limit, cuda_detail::conv_pass::backward_filter, g).math == CUDNN_FMA_MATH));
    // Only the count returned is read; without a deterministic one, the first supported.
    BOOST_TEST(cuda_detail::pick_algorithm(mixed, 3, false, limit, cuda_detail::conv_pass::backward_filter, g).algo ==
               int(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0));
    try {
        (void)cuda_detail::pick_algorithm(mixed, 1, false, limit, cuda_detail::conv_pass::backward_filter, g);
        BOOST_FAIL("no usable algorithm, yet one was chosen");
    } catch (const cuda_error& e) {
        const std::string what = e.what();
        BOOST_TEST(what.find("backward filter") != std::string::npos, what);
        BOOST_TEST(what.find("padding (0, 1, 0, 1)") != std::string::npos, what);
    }
}

BOOST_AUTO_TEST_CASE(cudnn_errors_name_the_call_and_the_cause) {
    BOOST_CHECK_NO_THROW(cuda_detail::check(CUDNN_STATUS_SUCCESS, "cudnnConvolutionForward"));
    try {
        cuda_detail::check(CUDNN_STATUS_BAD_PARAM, "cudnnConvolutionForward");
        BOOST_FAIL("a failed status did not throw");
    } catch (const cuda_error& e) {
        const std::string what = e.what();
        BOOST_TEST(what.find("cudnnConvolutionForward") != std::string::npos, what);
        BOOST_TEST(what.find(cudnnGetErrorString(CUDNN_STATUS_BAD_PARAM)) != std::string::npos, what);
    }
}

// The bias rows of the 1×1 path's forward cover all images at once: the channel of element e is
// (e / plane) mod channels.
BOOST_AUTO_TEST_CASE(bias_rows_repeat_per_image) {
    const std::int64_t images = 3, channels = 4, plane = 5;
    const std::vector<double> bias = {1, 2, 3, 4};
    std::vector<double> y(static_cast<std::size_t>(images * channels * plane));
    run_on_host(static_cast<std::int64_t>(y.size()), cuda_detail::channel_rows_op<double>{y.data(), bias.data(), plane, channels});
    for (std::int64_t n = 0; n < images; ++n)
        for (std::int64_t c = 0; c < channels; ++c)
            for (std::int64_t p = 0; p < plane; ++p) BOOST_TEST(y[static_cast<std::size_t>((n * channels + c) * plane + p)] == bias[c]);
}

// The functors' index arithmetic: 32-bit division where the index and the divisor fit in 32 bits
// unsigned, 64-bit beyond; the same quotients and remainders on both sides of 2³¹ and 2³².
BOOST_AUTO_TEST_CASE(index_division_is_exact_on_both_sides_of_32_bits) {
    const std::int64_t big = std::int64_t{1} << 32;
    for (const std::int64_t a : {std::int64_t{0}, std::int64_t{1}, std::int64_t{12345}, (std::int64_t{1} << 31) - 1, std::int64_t{1} << 31,
                                 big - 1, big, big + 7, std::int64_t{3} << 40})
        for (const std::int64_t d : {std::int64_t{1}, std::int64_t{3}, std::int64_t{64}, std::int64_t{1000003}, big - 1, big + 5}) {
            BOOST_TEST(cuda_detail::index_div(a, d) == a / d, a << " / " << d);
            BOOST_TEST(cuda_detail::index_mod(a, d) == a % d, a << " % " << d);
        }
}

// A Linear's cuBLASLt plan is shared only by calls that agree in every field that shapes it:
// changing any one field gives a key the map tells apart.
BOOST_AUTO_TEST_CASE(linear_plan_keys_differ_in_every_field) {
    const cuda_detail::lt_plan_key base{256, 768, 384, 0, 68, true, 256, 256, 256, 0};
    std::vector<cuda_detail::lt_plan_key> changed(10, base);
    changed[0].rows = 255;
    changed[1].out = 769;
    changed[2].in = 385;
    changed[3].input_type = 14;
    changed[4].compute = 77;
    changed[5].bias = false;
    changed[6].align_w = 16;
    changed[7].align_x = 16;
    changed[8].align_y = 16;
    changed[9].device = 1;
    std::map<cuda_detail::lt_plan_key, int> plans{{base, -1}};
    for (std::size_t i = 0; i < changed.size(); ++i) {
        BOOST_TEST((changed[i] < base || base < changed[i]), "field " << i);
        plans.emplace(changed[i], int(i));
    }
    BOOST_TEST(plans.size() == 11u);
    BOOST_TEST(!(base < base));
}
