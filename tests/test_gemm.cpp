#define BOOST_TEST_MODULE gemm
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <omp.h>

#include "support/fixture.hpp"
#include "support/errors.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/nn/linear.hpp"
#include "vediff/ops/gemm.hpp"

using namespace vediff;
using testing::check_close;
using testing::contains;
using testing::shape_error_message;
using testing::random_tensor;

namespace {

/// The transpose of the last two axes (a copy), for handing a product its operand in stored-transposed form.
template <class T>
tensor<T, cpu> transposed(const tensor_view<T, cpu>& a) {
    const int r = a.rank();
    tensor_shape s = a.shape();
    std::swap(s[r - 1], s[r - 2]);
    tensor<T, cpu> t(s);
    const std::int64_t rows = a.dim(r - 2), cols = a.dim(r - 1), batch = a.numel() / (rows * cols);
    for (std::int64_t b = 0; b < batch; ++b)
        for (std::int64_t i = 0; i < rows; ++i)
            for (std::int64_t j = 0; j < cols; ++j)
                t.data()[b * rows * cols + j * rows + i] = a.data()[b * rows * cols + i * cols + j];
    return t;
}

/// Textbook triple loop in double: c[b] = op(a[b])·op(b[b]).
template <class T>
tensor<double, cpu> naive_matmul(const tensor_view<T, cpu>& a, const tensor_view<T, cpu>& b, bool ta, bool tb) {
    const auto e = ops::matmul_check("naive", a, b, ta, tb);
    tensor<double, cpu> c(a.rank() == 3 ? tensor_shape{e.batch, e.m, e.n} : tensor_shape{e.m, e.n});
    const std::int64_t as = a.dim(-1), bs = b.dim(-1);
    for (std::int64_t p = 0; p < e.batch; ++p)
        for (std::int64_t i = 0; i < e.m; ++i)
            for (std::int64_t j = 0; j < e.n; ++j) {
                double s = 0;
                for (std::int64_t q = 0; q < e.k; ++q) {
                    const T av = a.data()[p * e.m * e.k + (ta ? q * as + i : i * as + q)];
                    const T bv = b.data()[p * e.k * e.n + (tb ? j * bs + q : q * bs + j)];
                    s += double(av) * double(bv);
                }
                c.data()[(p * e.m + i) * e.n + j] = s;
            }
    return c;
}

template <class T>
tensor_shape stored(std::int64_t rows, std::int64_t cols, bool transpose, std::int64_t batch = 0) {
    const std::int64_t r = transpose ? cols : rows, c = transpose ? rows : cols;
    return batch ? tensor_shape{batch, r, c} : tensor_shape{r, c};
}

template <class T>
void check_matmul_gradients(bool ta, bool tb, std::int64_t batch) {
    auto a = random_tensor<T>(stored<T>(3, 4, ta, batch), 11, 1);
    auto b = random_tensor<T>(stored<T>(4, 5, tb, batch), 11, 2);
    testing::check_op_gradients<T>(
        "matmul ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) + " batch=" + std::to_string(batch),
        [&](const std::vector<tensor_view<T, cpu>>& in) { return ops::matmul(in[0], in[1], ta, tb); },
        [&](const tensor_view<T, cpu>& dc, const std::vector<tensor_view<T, cpu>>& in) {
            auto g = ops::matmul_backward(dc, in[0], in[1], ta, tb);
            std::vector<tensor<T, cpu>> out;
            out.push_back(std::move(g.da));
            out.push_back(std::move(g.db));
            return out;
        },
        {a, b});
}

template <class T>
void check_linear_op_gradients(bool with_bias) {
    auto x = random_tensor<T>({2, 3, 6}, 21, 1);
    auto w = random_tensor<T>({4, 6}, 21, 2, 0.5);
    auto bias = random_tensor<T>({4}, 21, 3);
    std::vector<tensor_view<T, cpu>> inputs{x, w};
    if (with_bias) inputs.push_back(bias);
    testing::check_op_gradients<T>(
        with_bias ? "linear with bias" : "linear without bias",
        [&](const std::vector<tensor_view<T, cpu>>& in) {
            return in.size() == 3 ? ops::linear(in[0], in[1], in[2]) : ops::linear(in[0], in[1]);
        },
        [&](const tensor_view<T, cpu>& dy, const std::vector<tensor_view<T, cpu>>& in) {
            std::vector<tensor<T, cpu>> out;
            auto dw = tensor<T, cpu>::zeros(in[1].shape());
            if (in.size() == 3) {
                auto db = tensor<T, cpu>::zeros(in[2].shape());
                out.push_back(ops::linear_backward(dy, in[0], in[1], dw.view(), db.view()));
                out.push_back(std::move(dw));
                out.push_back(std::move(db));
            } else {
                out.push_back(ops::linear_backward(dy, in[0], in[1], dw.view()));
                out.push_back(std::move(dw));
            }
            return out;
        },
        inputs);
}

} // namespace

static_assert(nn::layer<nn::linear<float>>);
static_assert(nn::layer<nn::linear<double>>);

BOOST_AUTO_TEST_SUITE(hand_computed)

BOOST_AUTO_TEST_CASE(two_by_two_product) {
    auto a = tensor<float>::from_host({2, 2}, {1, 2, 3, 4});
    auto b = tensor<float>::from_host({2, 2}, {5, 6, 7, 8});
    auto c = ops::matmul(a, b);
    BOOST_TEST(c.to_vector() == (std::vector<float>{19, 22, 43, 50}), boost::test_tools::per_element());
    // aᵀ·b = [[1·5 + 3·7, 1·6 + 3·8], [2·5 + 4·7, 2·6 + 4·8]]
    auto ct = ops::matmul(a, b, true, false);
    BOOST_TEST(ct.to_vector() == (std::vector<float>{26, 30, 38, 44}), boost::test_tools::per_element());
    // a·bᵀ = [[1·5 + 2·6, 1·7 + 2·8], [3·5 + 4·6, 3·7 + 4·8]]
    auto cn = ops::matmul(a, b, false, true);
    BOOST_TEST(cn.to_vector() == (std::vector<float>{17, 23, 39, 53}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(gemm_alpha_beta_accumulate) {
    auto a = tensor<double>::from_host({2, 3}, {1, 0, 2, -1, 3, 1});
    auto b = tensor<double>::from_host({3, 1}, {3, 2, 1});
    auto c = tensor<double>::from_host({2, 1}, {10, 20});
    // a·b = (5, 4); c = 2·(5, 4) + 0.5·(10, 20)
    ops::gemm(c.view(), a, b, false, false, 2.0, 0.5);
    BOOST_TEST(c.at(0, 0) == 15.0);
    BOOST_TEST(c.at(1, 0) == 18.0);
    // beta = 0 must ignore (not multiply) whatever c holds, NaN included.
    ops::fill(c.view(), std::numeric_limits<double>::quiet_NaN());
    ops::gemm(c.view(), a, b);
    BOOST_TEST(c.at(0, 0) == 5.0);
    BOOST_TEST(c.at(1, 0) == 4.0);
}

BOOST_AUTO_TEST_CASE(empty_inner_extent_scales_c) {
    auto a = tensor<float>::zeros({2, 0});
    auto b = tensor<float>::zeros({0, 3});
    auto c = tensor<float>::full({2, 3}, 4.0f);
    ops::gemm(c.view(), a, b, false, false, 1.0f, 0.5f);
    for (float v : c.to_vector()) BOOST_TEST(v == 2.0f);
    BOOST_TEST(ops::matmul(a, b).to_vector() == std::vector<float>(6, 0.0f), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(linear_by_hand) {
    // x = (1, 2), W = [[1, 1], [2, -1], [0, 3]], b = (0.5, 0, -1) → (3.5, 0, 5)
    auto x = tensor<float>::from_host({1, 2}, {1, 2});
    auto w = tensor<float>::from_host({3, 2}, {1, 1, 2, -1, 0, 3});
    auto b = tensor<float>::from_host({3}, {0.5f, 0, -1});
    BOOST_TEST(ops::linear(x, w, b).to_vector() == (std::vector<float>{3.5f, 0, 5}), boost::test_tools::per_element());
    BOOST_TEST(ops::linear(x, w).to_vector() == (std::vector<float>{3, 0, 6}), boost::test_tools::per_element());
    // A rank-1 input is a single row.
    auto x1 = tensor<float>::from_host({2}, {1, 2});
    auto y1 = ops::linear(x1, w, b);
    BOOST_TEST(y1.shape() == (tensor_shape{3}));
    // dy = (1, 1, 1): dx = Σ rows of W = (3, 3); dW rows = x; db = 1 (accumulated onto 1).
    auto dy = tensor<float>::full({1, 3}, 1.0f);
    auto dw = tensor<float>::zeros({3, 2});
    auto db = tensor<float>::full({3}, 1.0f);
    auto dx = ops::linear_backward(dy, x, w, dw.view(), db.view());
    BOOST_TEST(dx.to_vector() == (std::vector<float>{3, 3}), boost::test_tools::per_element());
    BOOST_TEST(dw.to_vector() == (std::vector<float>{1, 2, 1, 2, 1, 2}), boost::test_tools::per_element());
    BOOST_TEST(db.to_vector() == (std::vector<float>{2, 2, 2}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(kernel_honours_leading_dimensions) {
    // The top-left 2×2 block of a 3×4 matrix times itself transposed, written into a 2×2 block of a 2×5 matrix.
    std::vector<double> a{1, 2, 9, 9, 3, 4, 9, 9, 9, 9, 9, 9};
    std::vector<double> c(10, -1.0);
    gemm_kernels<cpu>::gemm<double>(2, 2, 2, 1.0, a.data(), 4, false, a.data(), 4, true, 0.0, c.data() + 1, 5);
    // [[1, 2], [3, 4]]·[[1, 3], [2, 4]] = [[5, 11], [11, 25]]
    BOOST_TEST(c == (std::vector<double>{-1, 5, 11, -1, -1, -1, 11, 25, -1, -1}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(against_torch)

BOOST_AUTO_TEST_CASE(matmul_and_transposes) {
    const auto f = testing::load_fixture("gemm.txt");
    auto a = f.get("matmul.a"), b = f.get("matmul.b");
    check_close(ops::matmul(a, b), f.get("matmul.nn"), 1e-12, 1e-12, "matmul nn");
    auto at = transposed<double>(a), bt = transposed<double>(b);
    check_close(ops::matmul(at, b, true, false), f.get("matmul.tn"), 1e-12, 1e-12, "matmul tn");
    check_close(ops::matmul(a, bt, false, true), f.get("matmul.nt"), 1e-12, 1e-12, "matmul nt");
    check_close(ops::matmul(at, bt, true, true), f.get("matmul.nn"), 1e-12, 1e-12, "matmul tt");
    auto af = f.get<float>("matmul.a"), bf = f.get<float>("matmul.b");
    check_close(ops::matmul(af, bf), f.get("matmul.nn"), 1e-5, 1e-5, "matmul nn (float)");
}

BOOST_AUTO_TEST_CASE(batched) {
    const auto f = testing::load_fixture("gemm.txt");
    check_close(ops::matmul(f.get("bmm.a").view(), f.get("bmm.b").view()), f.get("bmm.c"), 1e-12, 1e-12, "bmm");
}

BOOST_AUTO_TEST_CASE(linear_forward_and_backward) {
    const auto f = testing::load_fixture("gemm.txt");
    auto x = f.get("linear.x"), w = f.get("linear.weight"), b = f.get("linear.bias"), dy = f.get("linear.dy");
    check_close(ops::linear(x, w, b), f.get("linear.y"), 1e-12, 1e-12, "linear y");
    check_close(ops::linear(x, w), f.get("linear.y_nobias"), 1e-12, 1e-12, "linear y without bias");
    auto dw = tensor<double>::zeros(w.shape());
    auto db = tensor<double>::zeros(b.shape());
    check_close(ops::linear_backward(dy, x, w, dw.view(), db.view()), f.get("linear.dx"), 1e-12, 1e-12, "linear dx");
    check_close(dw, f.get("linear.dweight"), 1e-12, 1e-12, "linear dweight");
    check_close(db, f.get("linear.dbias"), 1e-12, 1e-12, "linear dbias");
    // A second backward accumulates: the gradients double.
    (void)ops::linear_backward(dy, x, w, dw.view(), db.view());
    auto twice = ops::scale(f.get("linear.dweight").view(), 2.0);
    check_close(dw, twice, 1e-12, 1e-12, "linear dweight accumulated");

    auto xf = f.get<float>("linear.x"), wf = f.get<float>("linear.weight"), bf = f.get<float>("linear.bias");
    check_close(ops::linear(xf, wf, bf), f.get("linear.y"), 1e-5, 1e-5, "linear y (float)");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(threaded_paths)

// Sizes past the threading threshold, split by rows (m ≥ n) or by columns, and batches that do
// and do not divide among the threads, against a textbook loop.
BOOST_AUTO_TEST_CASE(large_products_match_naive) {
    struct shape_case {
        std::int64_t batch, m, n, k;
    };
    for (auto s : {shape_case{0, 301, 77, 130}, shape_case{0, 45, 290, 170}, shape_case{3, 70, 90, 60},
                   shape_case{4, 70, 90, 60}, shape_case{8, 17, 33, 5}})
        for (int t = 0; t < 4; ++t) {
            const bool ta = t & 1, tb = t & 2;
            auto a = random_tensor<float>(stored<float>(s.m, s.k, ta, s.batch), 3, 1);
            auto b = random_tensor<float>(stored<float>(s.k, s.n, tb, s.batch), 3, 2);
            BOOST_TEST_CONTEXT("batch " << s.batch << " m " << s.m << " n " << s.n << " k " << s.k << " ta " << ta << " tb " << tb) {
                check_close(ops::matmul(a, b, ta, tb), naive_matmul<float>(a, b, ta, tb), 1e-4, 1e-4, "matmul");
            }
        }
}

BOOST_AUTO_TEST_CASE(packed_kernel_edges_match_naive) {
    // Products that take the packed AVX-512 kernel (where built with it): rows, columns and depth
    // off the 12 × 32 tile and the 384-deep slices, every transpose, alpha and an accumulating
    // beta, and leading dimensions wider than the matrices.
    struct shape_case {
        std::int64_t m, n, k;
    };
    for (auto s : {shape_case{97, 64, 40}, shape_case{1601, 120, 395}, shape_case{130, 515, 800}})
        for (int t = 0; t < 4; ++t) {
            const bool ta = t & 1, tb = t & 2;
            BOOST_TEST_CONTEXT("m " << s.m << " n " << s.n << " k " << s.k << " ta " << ta << " tb " << tb) {
                BOOST_TEST(cpu_detail::use_packed_gemm(s.m, s.n, s.k) == cpu_detail::packed_gemm_available);
                const std::int64_t a_rows = ta ? s.k : s.m, a_cols = ta ? s.m : s.k, b_rows = tb ? s.n : s.k, b_cols = tb ? s.k : s.n;
                auto a = random_tensor<float>({a_rows, a_cols + 3}, 3, 1);  // 3 columns of padding: lda > cols
                auto b = random_tensor<float>({b_rows, b_cols + 5}, 3, 2);
                auto c = random_tensor<float>({s.m, s.n + 2}, 3, 3);
                const auto c0 = c.to_vector();
                gemm_kernels<cpu>::gemm_serial(s.m, s.n, s.k, 0.5f, a.data(), a_cols + 3, ta, b.data(), b_cols + 5, tb, 2.0f, c.data(), s.n + 2);
                double worst = 0;
                for (std::int64_t i = 0; i < s.m; ++i)
                    for (std::int64_t j = 0; j < s.n + 2; ++j) {
                        double ref = c0[std::size_t(i * (s.n + 2) + j)];
                        if (j < s.n) {
                            double sum = 0;
                            for (std::int64_t p = 0; p < s.k; ++p)
                                sum += double(ta ? a.at(p, i) : a.at(i, p)) * double(tb ? b.at(j, p) : b.at(p, j));
                            ref = 0.5 * sum + 2.0 * ref;
                        }
                        worst = std::max(worst, std::abs(double(c.at(i, j)) - ref));  // padding columns untouched
                    }
                BOOST_TEST(worst < 1e-3);
            }
        }
}

BOOST_AUTO_TEST_CASE(threaded_packed_products_share_one_packing_of_b) {
    // Products split by rows among threads pack op(B) once for all of them (gemm.hpp,
    // packed_row_parts): every transpose, depth over two slices, a ragged last column panel,
    // leading dimensions wider than the matrices and an accumulating beta, on 2 threads.
    const int saved_threads = omp_get_max_threads();
    omp_set_num_threads(2);
    const std::int64_t m = 1601, n = 120, k = 800;
    for (int t = 0; t < 4; ++t) {
        const bool ta = t & 1, tb = t & 2;
        BOOST_TEST_CONTEXT("ta " << ta << " tb " << tb) {
            const std::int64_t a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
            auto a = random_tensor<float>({a_rows, a_cols + 3}, 4, 1), b = random_tensor<float>({b_rows, b_cols + 5}, 4, 2);
            auto c = random_tensor<float>({m, n + 2}, 4, 3);
            const auto c0 = c.to_vector();
            gemm_kernels<cpu>::gemm(m, n, k, 0.5f, a.data(), a_cols + 3, ta, b.data(), b_cols + 5, tb, 2.0f, c.data(), n + 2);
            double worst = 0;
            for (std::int64_t i = 0; i < m; ++i)
                for (std::int64_t j = 0; j < n + 2; ++j) {
                    double ref = c0[std::size_t(i * (n + 2) + j)];
                    if (j < n) {
                        double sum = 0;
                        for (std::int64_t p = 0; p < k; ++p) sum += double(ta ? a.at(p, i) : a.at(i, p)) * double(tb ? b.at(j, p) : b.at(p, j));
                        ref = 0.5 * sum + 2.0 * ref;
                    }
                    worst = std::max(worst, std::abs(double(c.at(i, j)) - ref));
                }
            BOOST_TEST(worst < 2e-3);
        }
    }
    omp_set_num_threads(saved_threads);
}

#if defined(__AVX512F__)
BOOST_AUTO_TEST_CASE(small_gemm_matches_naive_at_every_edge) {
    // small_gemm (attention's per-head products): rows off its 8-row tiles (each tail size),
    // columns off its 32-column tiles, A read through both strides (as Pᵀ is), accumulate.
    for (std::int64_t m : {1, 5, 8, 15, 64})
        for (std::int64_t n : {3, 16, 33, 64})
            for (bool a_transposed : {false, true})
                for (bool accumulate : {false, true}) {
                    BOOST_TEST_CONTEXT("m " << m << " n " << n << " A transposed " << a_transposed << " accumulate " << accumulate) {
                        const std::int64_t k = 21, lda = a_transposed ? m + 2 : k + 2, ldb = n + 3, ldc = n + 1;
                        auto a = random_tensor<float>({a_transposed ? k : m, lda}, 6, 1), b = random_tensor<float>({k, ldb}, 6, 2);
                        auto c = random_tensor<float>({m, ldc}, 6, 3);
                        const auto c0 = c.to_vector();
                        const std::int64_t a_row = a_transposed ? 1 : lda, a_depth = a_transposed ? lda : 1;
                        cpu_detail::small_gemm(m, n, k, 0.5f, a.data(), a_row, a_depth, b.data(), ldb, c.data(), ldc, accumulate);
                        double worst = 0;
                        for (std::int64_t i = 0; i < m; ++i)
                            for (std::int64_t j = 0; j < ldc; ++j) {
                                double ref = c0[std::size_t(i * ldc + j)];
                                if (j < n) {
                                    double sum = 0;
                                    for (std::int64_t p = 0; p < k; ++p) sum += double(a.data()[i * a_row + p * a_depth]) * double(b.at(p, j));
                                    ref = 0.5 * sum + (accumulate ? ref : 0.0);
                                }
                                worst = std::max(worst, std::abs(double(c.at(i, j)) - ref));  // column padding untouched
                            }
                        BOOST_TEST(worst < 1e-4);
                    }
                }
}
#endif

BOOST_AUTO_TEST_CASE(packed_linear_adds_the_bias_once) {
    // A Linear large enough for the packed kernel, its depth over two 384-deep slices: the bias
    // is added as the output tiles are written (first slice only), with and without bias.
    BOOST_TEST(cpu_detail::use_packed_gemm(500, 150, 500) == cpu_detail::packed_gemm_available);
    auto x = random_tensor<float>({1000, 500}, 3, 1), w = random_tensor<float>({150, 500}, 3, 2, 0.1);
    auto bias = random_tensor<float>({150}, 3, 3);
    auto ref = naive_matmul<float>(x, w, false, true);
    auto with_bias = ref.clone();
    for (std::int64_t i = 0; i < 1000; ++i)
        for (std::int64_t j = 0; j < 150; ++j) with_bias.at(i, j) += double(bias.at(j));
    check_close(ops::linear(x, w, bias), with_bias, 1e-4, 1e-4, "linear with bias");
    check_close(ops::linear(x, w), ref, 1e-4, 1e-4, "linear without bias");
}

BOOST_AUTO_TEST_CASE(large_linear_backward_matches_naive) {
    auto x = random_tensor<float>({4, 50, 96}, 5, 1);
    auto w = random_tensor<float>({130, 96}, 5, 2, 0.1);
    auto dy = random_tensor<float>({4, 50, 130}, 5, 3);
    auto dw = tensor<float>::zeros(w.shape());
    auto db = tensor<float>::zeros({130});
    auto dx = ops::linear_backward(dy, x, w, dw.view(), db.view());
    auto x2 = x.reshape({200, 96}), dy2 = dy.reshape({200, 130});
    check_close(dx.reshape({200, 96}), naive_matmul<float>(dy2, w, false, false), 1e-4, 1e-4, "dx");
    check_close(dw, naive_matmul<float>(dy2, x2, true, false), 1e-4, 1e-4, "dweight");
    auto ones = tensor<float>::full({200, 1}, 1.0f);
    check_close(db.reshape({130, 1}), naive_matmul<float>(dy2, ones, true, false), 1e-4, 1e-4, "dbias");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(gradients)

BOOST_AUTO_TEST_CASE(matmul_all_transposes_double) {
    for (int t = 0; t < 4; ++t) {
        check_matmul_gradients<double>(t & 1, t & 2, 0);
        check_matmul_gradients<double>(t & 1, t & 2, 3);
    }
}

BOOST_AUTO_TEST_CASE(matmul_all_transposes_float) {
    for (int t = 0; t < 4; ++t) {
        check_matmul_gradients<float>(t & 1, t & 2, 0);
        check_matmul_gradients<float>(t & 1, t & 2, 2);
    }
}

BOOST_AUTO_TEST_CASE(linear_op) {
    for (bool with_bias : {true, false}) {
        check_linear_op_gradients<double>(with_bias);
        check_linear_op_gradients<float>(with_bias);
    }
}

BOOST_AUTO_TEST_CASE(linear_layer) {
    for (bool with_bias : {true, false}) {
        nn::linear<double> ld(6, 5, with_bias, 3);
        testing::check_layer_gradients(with_bias ? "linear<double>" : "linear<double> without bias", ld, {2, 3, 6});
        nn::linear<float> lf(6, 5, with_bias, 3);
        testing::check_layer_gradients(with_bias ? "linear<float>" : "linear<float> without bias", lf, {4, 6});
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(layer)

BOOST_AUTO_TEST_CASE(parameters_and_names) {
    nn::linear<float> l(7, 3);
    auto params = nn::named_parameters(l);
    BOOST_REQUIRE_EQUAL(params.size(), 2u);
    BOOST_TEST(params[0].first == "weight");
    BOOST_TEST(params[1].first == "bias");
    BOOST_TEST(params[0].second->shape() == (tensor_shape{3, 7}));
    BOOST_TEST(params[1].second->shape() == (tensor_shape{3}));
    BOOST_TEST(l.in_features() == 7);
    BOOST_TEST(l.out_features() == 3);
    nn::linear<float> nb(7, 3, false);
    BOOST_TEST(nn::named_parameters(nb).size() == 1u);
    BOOST_TEST(nn::parameter_count(nb) == 21);
    std::vector<std::string> names;
    l.for_each_parameter([&](const std::string& n, auto&) { names.push_back(n); }, "fc1");
    BOOST_TEST(names == (std::vector<std::string>{"fc1.weight", "fc1.bias"}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(default_init_is_uniform_in_one_over_sqrt_fan_in) {
    nn::linear<double> l(64, 256, true, 5);
    const double bound = 1.0 / 8.0;
    for (auto* p : {&l.weight, &l.bias}) {
        double sum = 0, sq = 0;
        for (double v : p->value.to_vector()) {
            BOOST_REQUIRE(std::abs(v) <= bound);
            sum += v;
            sq += v * v;
        }
        const double n = double(p->value.numel());
        BOOST_TEST(std::abs(sum / n) < 0.1 * bound);
        if (p == &l.weight) BOOST_TEST(std::abs(sq / n - bound * bound / 3) < 0.05 * bound * bound);  // var of U(−b, b)
    }
    for (double v : l.weight.grad.to_vector()) BOOST_REQUIRE(v == 0.0);
    // Same seed, same values; another seed, other values.
    nn::linear<double> same(64, 256, true, 5), other(64, 256, true, 6);
    BOOST_TEST((same.weight.value.to_vector() == l.weight.value.to_vector()));
    BOOST_TEST((other.weight.value.to_vector() != l.weight.value.to_vector()));
    BOOST_TEST((same.bias.value.to_vector()[0] != same.weight.value.to_vector()[0]));
}

BOOST_AUTO_TEST_CASE(forward_keeps_leading_axes) {
    nn::linear<float> l(5, 2);
    auto x = random_tensor<float>({3, 4, 5}, 1);
    auto y = l.forward(x);
    BOOST_TEST(y.shape() == (tensor_shape{3, 4, 2}));
    check_close(y, ops::linear(x.view(), l.weight.value.view(), l.bias.value.view()), 1e-7, 0, "layer vs op");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(shape_errors)

BOOST_AUTO_TEST_CASE(matmul_mismatch_names_op_and_shapes) {
    auto a = tensor<float>::zeros({2, 3}), b = tensor<float>::zeros({4, 5});
    auto msg = shape_error_message([&] { (void)ops::matmul(a, b); });
    BOOST_TEST(contains(msg, "matmul"), msg);
    BOOST_TEST(contains(msg, "(2, 3)"), msg);
    BOOST_TEST(contains(msg, "(4, 5)"), msg);
    BOOST_CHECK_NO_THROW((void)ops::matmul(a, tensor<float>::zeros({5, 3}).view(), false, true));

    auto v = tensor<float>::zeros({3});
    msg = shape_error_message([&] { (void)ops::matmul(v, b); });
    BOOST_TEST(contains(msg, "matmul"), msg);
    BOOST_TEST(contains(msg, "(3)"), msg);
    auto a3 = tensor<float>::zeros({2, 2, 3}), b3 = tensor<float>::zeros({3, 3, 4});
    msg = shape_error_message([&] { (void)ops::matmul(a3, b3); });
    BOOST_TEST(contains(msg, "batch"), msg);
    BOOST_TEST((contains(msg, "(2, 2, 3)") && contains(msg, "(3, 3, 4)")), msg);
    msg = shape_error_message([&] { (void)ops::matmul(a3, tensor<float>::zeros({3, 4}).view()); });
    BOOST_TEST(contains(msg, "rank"), msg);
}

BOOST_AUTO_TEST_CASE(gemm_output_and_backward_shapes) {
    auto a = tensor<float>::zeros({2, 3}), b = tensor<float>::zeros({3, 4}), c = tensor<float>::zeros({2, 5});
    auto msg = shape_error_message([&] { ops::gemm(c.view(), a, b); });
    BOOST_TEST((contains(msg, "gemm") && contains(msg, "(2, 5)") && contains(msg, "(2, 3)") && contains(msg, "(3, 4)")), msg);
    msg = shape_error_message([&] { (void)ops::matmul_backward(c.view(), a.view(), b.view()); });
    BOOST_TEST((contains(msg, "matmul_backward") && contains(msg, "(2, 5)") && contains(msg, "(2, 4)")), msg);
}

BOOST_AUTO_TEST_CASE(linear_mismatch_names_op_and_shapes) {
    auto x = tensor<float>::zeros({4, 3}), w = tensor<float>::zeros({5, 7});
    auto msg = shape_error_message([&] { (void)ops::linear(x, w); });
    BOOST_TEST((contains(msg, "linear") && contains(msg, "(4, 3)") && contains(msg, "(5, 7)")), msg);
    auto b = tensor<float>::zeros({4});
    auto w2 = tensor<float>::zeros({5, 3});
    msg = shape_error_message([&] { (void)ops::linear(x, w2, b); });
    BOOST_TEST((contains(msg, "bias") && contains(msg, "(4)") && contains(msg, "(5, 3)")), msg);
    msg = shape_error_message([&] { (void)ops::linear(x, tensor<float>::zeros({3}).view()); });
    BOOST_TEST((contains(msg, "linear") && contains(msg, "rank 2")), msg);
    auto dy = tensor<float>::zeros({4, 4}), dw = tensor<float>::zeros({5, 3});
    msg = shape_error_message([&] { (void)ops::linear_backward(dy, x, w2, dw.view()); });
    BOOST_TEST((contains(msg, "linear_backward") && contains(msg, "(4, 4)") && contains(msg, "(4, 5)")), msg);

    nn::linear<float> l(6, 2);
    msg = shape_error_message([&] { (void)l.forward(x); });
    BOOST_TEST((contains(msg, "linear") && contains(msg, "(4, 3)") && contains(msg, "(2, 6)")), msg);
}

BOOST_AUTO_TEST_SUITE_END()
