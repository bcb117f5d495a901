#define BOOST_TEST_MODULE precision
#include <boost/test/unit_test.hpp>
#include <fmt/format.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "support/fixture.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/core/bfloat16.hpp"
#include "vediff/core/precision.hpp"
#include "vediff/models/autoencoder.hpp"
#include "vediff/models/dit.hpp"
#include "vediff/nn/attention.hpp"
#include "vediff/nn/linear.hpp"
#include "vediff/ops/attention.hpp"
#include "vediff/ops/conv.hpp"
#include "vediff/ops/gemm.hpp"
#include "vediff/train/dit_run.hpp"

using namespace vediff;
using testing::random_tensor;

namespace {

/// The bfloat16 nearest to f by exhaustive comparison in double (ties to the even mantissa),
/// independent of the library's carry trick.
std::uint16_t nearest_bfloat16_bits(float f) {
    const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
    const std::uint16_t down = static_cast<std::uint16_t>(u >> 16);
    if ((u & 0xFFFFu) == 0) return down;
    const std::uint16_t up = static_cast<std::uint16_t>(down + 1);  // the next value away from zero (may be Inf)
    const auto value = [](std::uint16_t b) { return double(std::bit_cast<float>(std::uint32_t{b} << 16)); };
    // Overflow: above the largest finite bfloat16 (0x1.FEp127) rounds to Inf exactly when f is at
    // or beyond the midpoint 0x1.FFp127 to the next (unrepresentable) step 2^128 (a tie: even is Inf).
    if ((up & 0x7FFFu) == 0x7F80u) return std::abs(double(f)) >= 0x1.FFp127 ? up : down;
    const double d_down = std::abs(double(f) - value(down)), d_up = std::abs(double(f) - value(up));
    if (d_down < d_up) return down;
    if (d_up < d_down) return up;
    return (down & 1u) ? up : down;
}

/// Per element: |got − want| ≤ bound·Σ_p |op(a)(i,p)|·|op(b)(p,j)| + absolute, with want and the
/// magnitudes in double from the given operands (row-major, op already applied: a m×k, b k×n).
void check_product(const std::vector<float>& got, const std::vector<double>& a, const std::vector<double>& b,
                   const std::vector<double>& c0, const std::vector<double>& bias, std::int64_t m, std::int64_t n,
                   std::int64_t k, double alpha, double beta, double bound, const char* what) {
    std::int64_t bad = 0;
    double worst = 0;
    for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t j = 0; j < n; ++j) {
            double want = 0, magnitude = 0;
            for (std::int64_t p = 0; p < k; ++p) {
                want += a[i * k + p] * b[p * n + j];
                magnitude += std::abs(a[i * k + p] * b[p * n + j]);
            }
            want = alpha * want + (bias.empty() ? 0.0 : bias[j]) + (beta == 0 ? 0.0 : beta * c0[i * n + j]);
            const double allowed = bound * std::abs(alpha) * magnitude + 1e-6 * (std::abs(want) + 1e-30);
            const double err = std::abs(double(got[i * n + j]) - want);
            worst = std::max(worst, err / std::max(allowed, 1e-300));
            if (!(err <= allowed)) ++bad;
        }
    BOOST_TEST_INFO(what << ": worst error / allowed = " << worst);
    BOOST_TEST(bad == 0);
}

double round_bf16(float v) { return double(static_cast<float>(bfloat16(v))); }

/// Runs gemm_bf16 on random operands in every transpose combination and checks it twice: against
/// the fp64 product of the bf16-rounded operands within the fp32 accumulation bound (so both the
/// rounding of every operand and fp32 sums are required), and against the fp64 product of the
/// unrounded operands within bf16's bound 2u + u² (u = 2^-8) plus that.
void check_gemm_bf16(std::int64_t m, std::int64_t n, std::int64_t k, bool ta, bool tb, float alpha, float beta, bool with_bias,
                     bool serial, std::uint64_t seed) {
    const std::int64_t lda_extra = 3, ldb_extra = 5, ldc_extra = 2;
    const std::int64_t a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
    const std::int64_t lda = a_cols + lda_extra, ldb = b_cols + ldb_extra, ldc = n + ldc_extra;
    auto a = random_tensor<float>({a_rows, lda}, seed, 1);
    auto b = random_tensor<float>({b_rows, ldb}, seed, 2);
    // A fifth of the values set to exact ties between two bfloat16 neighbours: a truncating or
    // tie-breaking-wrong rounding then misses the tight bound.
    for (auto* t : {&a, &b})
        for (std::int64_t i = 0; i < t->numel(); i += 5) {
            const std::uint32_t u = (std::bit_cast<std::uint32_t>(t->data()[i]) & 0xFFFF0000u) | 0x8000u;
            t->data()[i] = std::bit_cast<float>(u);
        }
    auto c = random_tensor<float>({m, ldc}, seed, 3);
    auto bias = random_tensor<float>({n}, seed, 4);
    std::vector<double> op_a(m * k), op_a_rounded(m * k), op_b(k * n), op_b_rounded(k * n), c0(m * n), bias_d;
    for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t p = 0; p < k; ++p) {
            const float v = ta ? a.data()[p * lda + i] : a.data()[i * lda + p];
            op_a[i * k + p] = v;
            op_a_rounded[i * k + p] = round_bf16(v);
        }
    for (std::int64_t p = 0; p < k; ++p)
        for (std::int64_t j = 0; j < n; ++j) {
            const float v = tb ? b.data()[j * ldb + p] : b.data()[p * ldb + j];
            op_b[p * n + j] = v;
            op_b_rounded[p * n + j] = round_bf16(v);
        }
    for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t j = 0; j < n; ++j) c0[i * n + j] = c.data()[i * ldc + j];
    if (with_bias)
        for (std::int64_t j = 0; j < n; ++j) bias_d.push_back(bias.data()[j]);
    if (beta == 0.0f)  // C must not be read: garbage, NaN included, must not leak into the result
        for (std::int64_t i = 0; i < c.numel(); i += 7) c.data()[i] = std::numeric_limits<float>::quiet_NaN();
    if (serial)
        gemm_kernels<cpu>::gemm_bf16_serial(m, n, k, alpha, a.data(), lda, ta, b.data(), ldb, tb, beta, c.data(), ldc,
                                            with_bias ? bias.data() : nullptr);
    else
        gemm_kernels<cpu>::gemm_bf16(m, n, k, alpha, a.data(), lda, ta, b.data(), ldb, tb, beta, c.data(), ldc,
                                     with_bias ? bias.data() : nullptr);
    std::vector<float> got(m * n);
    for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t j = 0; j < n; ++j) got[i * n + j] = c.data()[i * ldc + j];
    // fp32 sums of k products (each exact) and the alpha/bias/beta epilogue: γ_(k+3) of fp32.
    const double fp32_bound = double(k + 3) * 0x1p-24;
    const double u = bfloat16_unit_roundoff;
    BOOST_TEST_CONTEXT(m << "x" << n << "x" << k << " ta=" << ta << " tb=" << tb << " alpha=" << alpha << " beta=" << beta
                         << " bias=" << with_bias << " serial=" << serial << " kernel=" << cpu_bf16_kernel_name()) {
        check_product(got, op_a_rounded, op_b_rounded, c0, bias_d, m, n, k, alpha, beta, fp32_bound, "rounded operands, fp32 sums");
        check_product(got, op_a, op_b, c0, bias_d, m, n, k, alpha, beta, 2 * u + u * u + fp32_bound * 1.01, "bf16 error bound");
    }
}

/// Restores the process's bf16 kernel choice when a test that switches it ends.
struct kernel_choice_guard {
    cpu_bf16_kernel saved = cpu_detail::bf16_kernel_setting().load();
    ~kernel_choice_guard() { set_cpu_bf16_kernel(saved); }
};

/// ‖a − b‖ / ‖b‖ over all elements.
double norm_relative_difference(const tensor_view<float, cpu>& a, const tensor_view<float, cpu>& b) {
    double diff = 0, norm = 0;
    for (std::int64_t i = 0; i < a.numel(); ++i) {
        diff += (double(a.data()[i]) - b.data()[i]) * (double(a.data()[i]) - b.data()[i]);
        norm += double(b.data()[i]) * b.data()[i];
    }
    return std::sqrt(diff / norm);
}

/// Every parameter (the zero-initialized adaLN and output layers included) set to N(0, 0.1²), so
/// that no product of the model is multiplied away by a zero weight.
template <class Model>
void randomize_parameters(Model& m, std::uint64_t seed) {
    std::uint64_t stream = 0;
    for (auto& [name, p] : nn::named_parameters(m)) {
        const auto r = random_tensor<float>(p->value.shape(), seed, ++stream, 0.1);
        std::copy(r.data(), r.data() + r.numel(), p->value.data());
    }
}


/// Copies every parameter value of one model into another of the same structure, requiring the
/// same names in the same order (one state dict for both precisions).
template <class Named>
void copy_parameter_values(const Named& from, const Named& to) {
    BOOST_REQUIRE(from.size() == to.size());
    for (std::size_t i = 0; i < from.size(); ++i) {
        BOOST_REQUIRE(from[i].first == to[i].first);
        std::copy(from[i].second->value.data(), from[i].second->value.data() + from[i].second->value.numel(), to[i].second->value.data());
    }
}

/// A float tensor as doubles: as is, rounded to bfloat16 first, or as absolute values.
enum class as_double { exact, rounded, absolute, rounded_absolute };
tensor<double, cpu> to_double(const tensor<float, cpu>& t, as_double how) {
    auto d = tensor<double, cpu>::empty(t.shape());
    for (std::int64_t i = 0; i < t.numel(); ++i) {
        const float v = t.data()[i];
        const double r = (how == as_double::rounded || how == as_double::rounded_absolute) ? round_bf16(v) : double(v);
        d.data()[i] = (how == as_double::absolute || how == as_double::rounded_absolute) ? std::abs(r) : r;
    }
    return d;
}

/// Winograd F(2×2, 3×3)'s rounding bound, per element of y, dx and dw. The bf16 path rounds the
/// transformed operands U = G g Gᵀ and V = Bᵀ d B (and dM = A dy Aᵀ in backward), so the error of
/// each transformed product is ≤ (2u + u²)·|U||V|, and carried through the output transform
/// ≤ (2u + u²)·Σ_ξ |Aᵀ|(|G||g||Gᵀ| ⊙ |Bᵀ||d||B|)|A|: a bilinear form in |g| and |d| whose 1-D
/// coefficients are K[a][i][p] = Σ_ξ |Aᵀ[a][ξ]|·|G[ξ][i]|·|Bᵀ[ξ][p]| (2-D: the product of two).
/// Backward's dx and dw are the same form's other two contractions (with |dy| in y's place).
/// The transforms are Lavin & Gray's; K ≥ the direct convolution's 0/1 coefficients, so the bound
/// is never below the im2col one.
struct winograd_bounds {
    tensor<double, cpu> y, dx, dw;
};
winograd_bounds winograd_rounding_bounds(const tensor<double, cpu>& x_abs, const tensor<double, cpu>& w_abs,
                                         const tensor<double, cpu>& dy_abs, const ops::padding2d& pad) {
    const double at[2][4] = {{1, 1, 1, 0}, {0, 1, 1, 1}};                                   // |Aᵀ|
    const double gm[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, 0.5, 0.5}, {0, 0, 1}};       // |G|
    const double bt[4][4] = {{1, 0, 1, 0}, {0, 1, 1, 0}, {0, 1, 1, 0}, {0, 1, 0, 1}};       // |Bᵀ|
    double k1[2][3][4] = {};
    for (int a = 0; a < 2; ++a)
        for (int i = 0; i < 3; ++i)
            for (int p = 0; p < 4; ++p)
                for (int xi = 0; xi < 4; ++xi) k1[a][i][p] += at[a][xi] * gm[xi][i] * bt[xi][p];
    const std::int64_t n_images = x_abs.dim(0), c_in = x_abs.dim(1), h = x_abs.dim(2), w = x_abs.dim(3);
    const std::int64_t c_out = w_abs.dim(0), ho = dy_abs.dim(2), wo = dy_abs.dim(3);
    winograd_bounds b{tensor<double, cpu>::zeros(dy_abs.shape()), tensor<double, cpu>::zeros(x_abs.shape()),
                      tensor<double, cpu>::zeros(w_abs.shape())};
    const auto X = [&](std::int64_t n, std::int64_t c, std::int64_t y, std::int64_t x) { return ((n * c_in + c) * h + y) * w + x; };
    const auto Y = [&](std::int64_t n, std::int64_t o, std::int64_t y, std::int64_t x) { return ((n * c_out + o) * ho + y) * wo + x; };
    const auto W = [&](std::int64_t o, std::int64_t c, std::int64_t i, std::int64_t j) { return ((o * c_in + c) * 3 + i) * 3 + j; };
    for (std::int64_t n = 0; n < n_images; ++n)
        for (std::int64_t ty = 0; ty < (ho + 1) / 2; ++ty)
            for (std::int64_t tx = 0; tx < (wo + 1) / 2; ++tx)
                for (int a = 0; a < 2; ++a)
                    for (int bb = 0; bb < 2; ++bb) {
                        const std::int64_t oy = 2 * ty + a, ox = 2 * tx + bb;
                        if (oy >= ho || ox >= wo) continue;  // outputs past the edge: computed, never stored; dy = 0
                        for (int p = 0; p < 4; ++p)
                            for (int q = 0; q < 4; ++q) {
                                const std::int64_t iy = 2 * ty - pad.top + p, ix = 2 * tx - pad.left + q;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;  // zero padding
                                for (int i = 0; i < 3; ++i)
                                    for (int j = 0; j < 3; ++j) {
                                        const double coef = k1[a][i][p] * k1[bb][j][q];
                                        if (coef == 0) continue;
                                        for (std::int64_t o = 0; o < c_out; ++o)
                                            for (std::int64_t c = 0; c < c_in; ++c) {
                                                const double wa = w_abs.data()[W(o, c, i, j)], xa = x_abs.data()[X(n, c, iy, ix)];
                                                const double da = dy_abs.data()[Y(n, o, oy, ox)];
                                                b.y.data()[Y(n, o, oy, ox)] += coef * wa * xa;
                                                b.dx.data()[X(n, c, iy, ix)] += coef * wa * da;
                                                b.dw.data()[W(o, c, i, j)] += coef * da * xa;
                                            }
                                    }
                            }
                    }
    return b;
}

/// max over elements of |got − want| / allowed (allowed > 0), and how many exceed 1.
struct bound_check {
    double worst = 0;
    std::int64_t over = 0;
    void add(double got, double want, double allowed) {
        const double r = std::abs(got - want) / std::max(allowed, 1e-300);
        worst = std::max(worst, r);
        if (!(r <= 1.0)) ++over;
    }
};

struct conv_case {
    std::int64_t n, c, o, h, w, k, stride;
    ops::padding2d pad;
};

/// ops::conv2d<bf16_mixed> and its backward on one case, against fp64. im2col: tight, against
/// fp64 on the bf16-rounded operands within fp32 summation (γ of the depth), which holds only if
/// x, w and dy are all rounded and the sums are fp32. Winograd (which rounds transformed values,
/// not x and w): against fp64 on the unrounded operands within the bound above plus fp32 sums;
/// and its error must exceed what fp32 products could make, so the bf16 path is the one tested.
void check_conv_bf16(const conv_case& cc, std::uint64_t seed) {
    const ops::conv2d_options opt{cc.stride, cc.pad};
    auto x = random_tensor<float>({cc.n, cc.c, cc.h, cc.w}, seed, 1), w = random_tensor<float>({cc.o, cc.c, cc.k, cc.k}, seed, 2, 0.3);
    auto bias = random_tensor<float>({cc.o}, seed, 3);
    const auto g = ops::conv2d_check("test", x.view(), w.view(), bias.view(), opt);
    auto dy = random_tensor<float>({cc.n, cc.o, g.out_h, g.out_w}, seed, 4);
    const bool winograd = conv_kernels<cpu>::uses_winograd(g);
    const auto y = ops::conv2d<bf16_mixed>(x.view(), w.view(), bias.view(), opt);
    auto dw = tensor<float, cpu>::zeros(w.shape()), db = tensor<float, cpu>::zeros(bias.shape());
    const auto dx = ops::conv2d_backward<bf16_mixed>(dy.view(), x.view(), w.view(), dw.view(), db.view(), opt);

    const double u = bfloat16_unit_roundoff, u32 = 0x1p-24;
    const auto ex = as_double::exact, rd = as_double::rounded, ab = as_double::absolute, ra = as_double::rounded_absolute;
    const auto xr = to_double(x, winograd ? ex : rd), wr = to_double(w, winograd ? ex : rd), dyr = to_double(dy, winograd ? ex : rd);
    const auto bd = to_double(bias, ex), bias_abs = to_double(bias, ab);
    const auto y_want = ops::conv2d(xr.view(), wr.view(), bd.view(), opt);
    auto dw_want = tensor<double, cpu>::zeros(w.shape());
    const auto dx_want = ops::conv2d_backward(dyr.view(), xr.view(), wr.view(), dw_want.view(), tensor_view<double, cpu>{}, opt);
    const auto xa = to_double(x, winograd ? ab : ra), wa = to_double(w, winograd ? ab : ra), dya = to_double(dy, winograd ? ab : ra);
    tensor<double, cpu> y_mag, dx_mag, dw_mag = tensor<double, cpu>::zeros(w.shape());
    double factor = 0;
    const double sums = double(cc.n * g.out_plane() + g.patch() + 16);  // the longest fp32 sum, with slack for transforms
    if (winograd) {
        auto bounds = winograd_rounding_bounds(xa, wa, dya, cc.pad);
        y_mag = std::move(bounds.y);
        dx_mag = std::move(bounds.dx);
        dw_mag = std::move(bounds.dw);
        factor = 2 * u + u * u + sums * u32;
    } else {
        y_mag = ops::conv2d(xa.view(), wa.view(), opt);
        dx_mag = ops::conv2d_backward(dya.view(), xa.view(), wa.view(), dw_mag.view(), tensor_view<double, cpu>{}, opt);
        factor = sums * u32;
    }
    struct checks {
        bound_check y, dx, dw, db;
    };
    const auto check = [&](const tensor<float, cpu>& y, const tensor<float, cpu>& dx, const tensor<float, cpu>& dw,
                           const tensor<float, cpu>& db) {
        checks c;
        for (std::int64_t i = 0; i < y.numel(); ++i)
            c.y.add(y.data()[i], y_want.data()[i],
                    factor * y_mag.data()[i] + 2 * u32 * (bias_abs.data()[i / g.out_plane() % cc.o] + y_mag.data()[i]) + 1e-30);
        for (std::int64_t i = 0; i < dx.numel(); ++i) c.dx.add(dx.data()[i], dx_want.data()[i], factor * dx_mag.data()[i] + 1e-30);
        for (std::int64_t i = 0; i < dw.numel(); ++i) c.dw.add(dw.data()[i], dw_want.data()[i], factor * dw_mag.data()[i] + 1e-30);
        for (std::int64_t o = 0; o < cc.o; ++o) {  // the bias gradient sums the unrounded dy in fp32
            double want = 0, mag = 0;
            for (std::int64_t n = 0; n < cc.n; ++n)
                for (std::int64_t p = 0; p < g.out_plane(); ++p) {
                    const double v = dy.data()[(n * cc.o + o) * g.out_plane() + p];
                    want += v;
                    mag += std::abs(v);
                }
            c.db.add(db.data()[o], want, sums * u32 * mag);
        }
        return c;
    };
    const checks mixed = check(y, dx, dw, db);
    const auto& [cy, cdx, cdw, cdb] = mixed;
    BOOST_TEST_CONTEXT(fmt::format("conv {} * {}", x.shape(), w.shape()) << " stride " << cc.stride << (winograd ? " winograd" : " im2col")
                               << " kernel=" << cpu_bf16_kernel_name()) {
        BOOST_TEST_MESSAGE(fmt::format("conv {} * {}", x.shape(), w.shape()) << (winograd ? " winograd" : " im2col") << " "
                                   << cpu_bf16_kernel_name() << ": worst error / allowed: y " << cy.worst << ", dx " << cdx.worst
                                   << ", dw " << cdw.worst << ", db " << cdb.worst);
        BOOST_TEST(cy.over == 0);
        BOOST_TEST(cdx.over == 0);
        BOOST_TEST(cdw.over == 0);
        BOOST_TEST(cdb.over == 0);
        if (winograd) {
            // Against the same bound the fp32 products' errors are far smaller: the bf16 path,
            // not the fp32 one, is what passed above.
            auto dw32 = tensor<float, cpu>::zeros(w.shape()), db32 = tensor<float, cpu>::zeros(bias.shape());
            const auto y32 = ops::conv2d(x.view(), w.view(), bias.view(), opt);
            const auto dx32 = ops::conv2d_backward(dy.view(), x.view(), w.view(), dw32.view(), db32.view(), opt);
            const checks fp32_run = check(y32, dx32, dw32, db32);
            BOOST_TEST_MESSAGE("  fp32 products against the same bound: y " << fp32_run.y.worst << ", dx " << fp32_run.dx.worst
                                                                              << ", dw " << fp32_run.dw.worst);
            BOOST_TEST(cy.worst > 20 * fp32_run.y.worst);
            BOOST_TEST(cdx.worst > 20 * fp32_run.dx.worst);
            BOOST_TEST(cdw.worst > 20 * fp32_run.dw.worst);
        }
    }
}
} // namespace

BOOST_AUTO_TEST_SUITE(test_precision)

BOOST_AUTO_TEST_CASE(bfloat16_rounds_to_nearest_with_ties_to_even) {
    const auto bits = [](float f) { return bfloat16(f).bits; };
    BOOST_TEST(bits(1.0f) == 0x3F80u);
    BOOST_TEST(bits(1.0f + 0x1p-8f) == 0x3F80u);                // tie, kept half even: down
    BOOST_TEST(bits(1.0f + 3 * 0x1p-8f) == 0x3F82u);            // tie, kept half odd: up to even
    BOOST_TEST(bits(1.0f + 0x1p-8f + 0x1p-20f) == 0x3F81u);     // above the tie: up (truncation gives 0x3F80)
    BOOST_TEST(bits(-(1.0f + 3 * 0x1p-8f)) == 0xBF82u);
    BOOST_TEST(bits(0.0f) == 0x0000u);
    BOOST_TEST(bits(-0.0f) == 0x8000u);
    BOOST_TEST(bits(std::numeric_limits<float>::infinity()) == 0x7F80u);
    BOOST_TEST(bits(-std::numeric_limits<float>::infinity()) == 0xFF80u);
    BOOST_TEST(bits(std::numeric_limits<float>::max()) == 0x7F80u);  // beyond the largest bf16's midpoint: Inf
    BOOST_TEST(bits(std::bit_cast<float>(0x7F7F0000u)) == 0x7F7Fu);  // the largest finite bf16 stays
    // NaN stays NaN, even one whose payload lies only in the dropped half (a carry would make it Inf).
    for (std::uint32_t nan : {0x7FC00000u, 0x7F800001u, 0xFF800001u, 0x7FBFFFFFu}) {
        const bfloat16 r(std::bit_cast<float>(nan));
        BOOST_TEST(std::isnan(static_cast<float>(r)));
        BOOST_TEST((r.bits & 0x8000u) == ((nan >> 16) & 0x8000u));  // sign kept
    }
    // Subnormals round like any other value: the smallest float subnormal to zero, a tie below
    // the smallest bf16 subnormal (2^-133) to zero (even), above it up.
    BOOST_TEST(bits(std::bit_cast<float>(0x00000001u)) == 0x0000u);
    BOOST_TEST(bits(std::bit_cast<float>(0x00008000u)) == 0x0000u);
    BOOST_TEST(bits(std::bit_cast<float>(0x00008001u)) == 0x0001u);
    // Every bfloat16 converts to float and back unchanged.
    for (std::uint32_t b = 0; b < 0x10000u; ++b) {
        const float f = static_cast<float>(bfloat16::from_bits(static_cast<std::uint16_t>(b)));
        if (std::isnan(f)) continue;
        if (bfloat16(f).bits != b) BOOST_FAIL("bfloat16 " << b << " does not round-trip");
    }
}

BOOST_AUTO_TEST_CASE(bfloat16_matches_an_exhaustive_nearest_search) {
    // 2·10^6 bit patterns over the whole float range (NaN excluded), each against the nearest of
    // its two bfloat16 neighbours found by comparing distances in double.
    std::uint64_t state = 0x9E3779B97F4A7C15ull;
    std::int64_t mismatches = 0;
    for (int i = 0; i < 2'000'000; ++i) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        std::uint32_t u = static_cast<std::uint32_t>(state >> 32);
        if (i % 4 == 0) u = (u & 0xFFFF0000u) | 0x8000u;  // a quarter exact ties
        const float f = std::bit_cast<float>(u);
        if (std::isnan(f)) continue;
        if (bfloat16(f).bits != nearest_bfloat16_bits(f)) ++mismatches;
    }
    BOOST_TEST(mismatches == 0);
}

BOOST_AUTO_TEST_CASE(gemm_bf16_is_the_product_of_rounded_operands_summed_in_fp32) {
    kernel_choice_guard guard;
    for (const auto kernel : {cpu_bf16_kernel::dot, cpu_bf16_kernel::portable}) {
        set_cpu_bf16_kernel(kernel);
        BOOST_TEST_MESSAGE("bf16 kernel: " << cpu_bf16_kernel_name());
        std::uint64_t seed = 11;
        for (bool ta : {false, true})
            for (bool tb : {false, true}) {
                // Odd extents, partial tiles, an odd depth, and a depth over one slice (768 + 33).
                check_gemm_bf16(29, 45, 17, ta, tb, 1.0f, 0.0f, false, false, ++seed);
                check_gemm_bf16(100, 70, 801, ta, tb, 0.5f, 1.0f, true, false, ++seed);
                check_gemm_bf16(13, 33, 1, ta, tb, 2.0f, -0.5f, true, true, ++seed);
                check_gemm_bf16(150, 64, 96, ta, tb, 1.0f, 0.0f, true, true, ++seed);
            }
        // Rows beyond one block of 1536 (several A packings per slice), threaded.
        check_gemm_bf16(1600, 40, 20, false, true, 1.0f, 0.0f, true, false, 99);
    }
}

BOOST_AUTO_TEST_CASE(threaded_bf16_gemm_equals_the_serial_one_bit_for_bit) {
    // Threads split the rows and share one packing of B; each row's sums run in the same order.
    kernel_choice_guard guard;
    set_cpu_bf16_kernel(cpu_bf16_kernel::dot);  // the portable path is the fp32 kernel's (tested in test_gemm)
    const std::int64_t m = 600, n = 200, k = 300;
    const auto a = random_tensor<float>({m, k}, 5, 1), b = random_tensor<float>({n, k}, 5, 2);
    tensor<float, cpu> serial(tensor_shape{m, n}), threaded(tensor_shape{m, n});
    gemm_kernels<cpu>::gemm_bf16_serial(m, n, k, 1.0f, a.data(), k, false, b.data(), k, true, 0.0f, serial.data(), n);
    gemm_kernels<cpu>::gemm_bf16(m, n, k, 1.0f, a.data(), k, false, b.data(), k, true, 0.0f, threaded.data(), n);
    BOOST_TEST(std::memcmp(serial.data(), threaded.data(), sizeof(float) * m * n) == 0);
}

BOOST_AUTO_TEST_CASE(bf16_kernel_and_portable_path_agree_within_fp32_summation_order) {
    if (!cpu_detail::cpu_has_avx512_bf16()) {
        BOOST_TEST_MESSAGE("this CPU has no avx512_bf16: only the portable path runs (checked above)");
        return;
    }
    kernel_choice_guard guard;
    const std::int64_t m = 97, n = 130, k = 777;
    const auto a = random_tensor<float>({m, k}, 8, 1), b = random_tensor<float>({k, n}, 8, 2);
    tensor<float, cpu> fast(tensor_shape{m, n}), portable(tensor_shape{m, n});
    set_cpu_bf16_kernel(cpu_bf16_kernel::dot);
    gemm_kernels<cpu>::gemm_bf16(m, n, k, 1.0f, a.data(), k, false, b.data(), n, false, 0.0f, fast.data(), n);
    set_cpu_bf16_kernel(cpu_bf16_kernel::portable);
    gemm_kernels<cpu>::gemm_bf16(m, n, k, 1.0f, a.data(), k, false, b.data(), n, false, 0.0f, portable.data(), n);
    double worst = 0, scale = 0;
    for (std::int64_t i = 0; i < m * n; ++i) {
        worst = std::max(worst, double(std::abs(fast.data()[i] - portable.data()[i])));
        scale = std::max(scale, double(std::abs(portable.data()[i])));
    }
    // Same exact products, sums in two orders: within 2·k fp32 roundings of the largest |sum|
    // scale (√k·σ² ≈ 28 here), far below one bf16 rounding of an operand (2^-8 relative).
    BOOST_TEST(worst <= 2.0 * double(k) * 0x1p-24 * scale * 4);
    BOOST_TEST(worst > 0.0);  // not the same path twice
}

BOOST_AUTO_TEST_CASE(linear_under_bf16_mixed_rounds_forward_and_backward_products) {
    // y = x·Wᵀ + b, dx = dy·W, dW += dyᵀ·x: every product from bf16-rounded operands (dy too),
    // fp32 sums; checked against fp64 on the rounded values (tight), so a product left in fp32
    // (error ~2^-9 relative to the rounded reference) fails.
    const std::int64_t rows = 37, in = 50, out = 23;
    auto x = random_tensor<float>({rows, in}, 21, 1), w = random_tensor<float>({out, in}, 21, 2);
    auto bias = random_tensor<float>({out}, 21, 3), dy = random_tensor<float>({rows, out}, 21, 4);
    const auto y = ops::linear<bf16_mixed>(x.view(), w.view(), bias.view());
    tensor<float, cpu> dw = random_tensor<float>({out, in}, 21, 5), db = random_tensor<float>({out}, 21, 6);
    const auto dw0 = dw.to_vector(), db0 = db.to_vector();
    const auto dx = ops::linear_backward<bf16_mixed>(dy.view(), x.view(), w.view(), dw.view(), db.view());
    const auto r = [](const tensor<float, cpu>& t, std::int64_t i) { return round_bf16(t.data()[i]); };
    double worst_y = 0, worst_dx = 0, worst_dw = 0, worst_db = 0;
    for (std::int64_t i = 0; i < rows; ++i)
        for (std::int64_t o = 0; o < out; ++o) {
            double want = bias.data()[o], mag = std::abs(bias.data()[o]);
            for (std::int64_t p = 0; p < in; ++p) {
                want += r(x, i * in + p) * r(w, o * in + p);
                mag += std::abs(r(x, i * in + p) * r(w, o * in + p));
            }
            worst_y = std::max(worst_y, std::abs(y.data()[i * out + o] - want) / mag);
        }
    for (std::int64_t i = 0; i < rows; ++i)
        for (std::int64_t p = 0; p < in; ++p) {
            double want = 0, mag = 0;
            for (std::int64_t o = 0; o < out; ++o) {
                want += r(dy, i * out + o) * r(w, o * in + p);
                mag += std::abs(r(dy, i * out + o) * r(w, o * in + p));
            }
            worst_dx = std::max(worst_dx, std::abs(dx.data()[i * in + p] - want) / mag);
        }
    for (std::int64_t o = 0; o < out; ++o) {
        for (std::int64_t p = 0; p < in; ++p) {
            double want = dw0[o * in + p], mag = std::abs(dw0[o * in + p]);
            for (std::int64_t i = 0; i < rows; ++i) {
                want += r(dy, i * out + o) * r(x, i * in + p);
                mag += std::abs(r(dy, i * out + o) * r(x, i * in + p));
            }
            worst_dw = std::max(worst_dw, std::abs(dw.data()[o * in + p] - want) / mag);
        }
        double want = db0[o], mag = std::abs(db0[o]);  // the bias gradient is a plain fp32 sum of dy
        for (std::int64_t i = 0; i < rows; ++i) {
            want += dy.data()[i * out + o];
            mag += std::abs(dy.data()[i * out + o]);
        }
        worst_db = std::max(worst_db, std::abs(db.data()[o] - want) / mag);
    }
    const double fp32_bound = (rows + in + 3) * 0x1p-24;
    BOOST_TEST(worst_y <= fp32_bound);
    BOOST_TEST(worst_dx <= fp32_bound);
    BOOST_TEST(worst_dw <= fp32_bound);
    BOOST_TEST(worst_db <= fp32_bound);
}

BOOST_AUTO_TEST_CASE(bf16_linear_layer_gradients_match_finite_differences_within_bf16_error) {
    // The gradient check of the mixed layer: its analytic gradients (bf16 products) against
    // central differences of the exact (double) layer with the same weights. A bf16 product has
    // relative error ≤ 2u + u² per term (u = 2^-8); over random terms the norm-wise error of a
    // gradient stays below that, so the tolerance is 2u + u² ≈ 0.0079: above it, a wrong
    // transpose or a lost accumulation (errors of order 1) fail; the fp32 layer passes at 1e-5.
    nn::linear<float, cpu, bf16_mixed> mixed(24, 16, true, 3);
    nn::linear<double, cpu> exact(24, 16, true, 3);
    const auto from = nn::named_parameters(mixed);
    const auto to = nn::named_parameters(exact);
    BOOST_REQUIRE(from.size() == to.size());
    for (std::size_t t = 0; t < to.size(); ++t)
        for (std::int64_t i = 0; i < to[t].second->value.numel(); ++i) to[t].second->value.data()[i] = from[t].second->value.data()[i];
    const auto x = random_tensor<float>({9, 24}, 4, 1), dy = random_tensor<float>({9, 16}, 4, 2);
    tensor<double, cpu> xd(x.shape()), dyd(dy.shape());
    for (std::int64_t i = 0; i < x.numel(); ++i) xd.data()[i] = x.data()[i];
    for (std::int64_t i = 0; i < dy.numel(); ++i) dyd.data()[i] = dy.data()[i];
    nn::zero_grad(mixed);
    (void)mixed.forward(x.view());
    const auto dx = mixed.backward(dy.view());
    // L(x, W, b) = <exact.forward(x), dy>: its gradients by central differences in double.
    const auto loss = [&] { return testing::dot(exact.forward(xd.view()).view(), dyd.view()); };
    const auto numeric = [&](tensor<double, cpu>& t) {
        std::vector<double> g(t.numel());
        for (std::int64_t i = 0; i < t.numel(); ++i) {
            const double keep = t.data()[i];
            t.data()[i] = keep + 1e-4;
            const double up = loss();
            t.data()[i] = keep - 1e-4;
            const double down = loss();
            t.data()[i] = keep;
            g[i] = (up - down) / 2e-4;
        }
        return g;
    };
    const auto as_double = [](const tensor_view<float, cpu>& t) {
        std::vector<double> v(t.numel());
        for (std::int64_t i = 0; i < t.numel(); ++i) v[i] = t.data()[i];
        return v;
    };
    const double tolerance = 2 * bfloat16_unit_roundoff + bfloat16_unit_roundoff * bfloat16_unit_roundoff;
    const double e_x = testing::relative_error(as_double(dx.view()), numeric(xd));
    const double e_w = testing::relative_error(as_double(mixed.weight.grad.view()), numeric(exact.weight.value));
    const double e_b = testing::relative_error(as_double(mixed.bias.grad.view()), numeric(exact.bias.value));
    BOOST_TEST_MESSAGE("bf16 linear: relative gradient errors dx " << e_x << ", dW " << e_w << ", db " << e_b);
    BOOST_TEST(e_x <= tolerance);
    BOOST_TEST(e_w <= tolerance);
    BOOST_TEST(e_b <= 1e-5);  // the bias gradient sums dy in fp32, no rounding
    BOOST_TEST(e_x > 1e-5);   // the products are rounded: not the fp32 layer's accuracy
}

BOOST_AUTO_TEST_CASE(conv2d_under_bf16_mixed_stays_within_the_rounding_bound_of_each_algorithm) {
    kernel_choice_guard guard;
    const std::vector<conv_case> cases{
        {3, 5, 7, 11, 10, 3, 2, {0, 1, 0, 1}},                  // LDM's Downsample: im2col, asymmetric pad, stride 2
        {2, 20, 12, 17, 17, 1, 1, {}},                          // 1×1 on a large plane: the direct product on x
        {6, 3, 8, 5, 5, 3, 1, ops::padding2d::symmetric(1)},    // small images grouped side by side (im2col)
        {2, 18, 16, 9, 9, 3, 1, ops::padding2d::symmetric(1)},  // Winograd, odd sizes (a partial tile per row)
    };
    for (const auto kernel : {cpu_bf16_kernel::dot, cpu_bf16_kernel::portable}) {
        set_cpu_bf16_kernel(kernel);
        for (std::size_t i = 0; i < cases.size(); ++i) check_conv_bf16(cases[i], 40 + i);
    }
}

BOOST_AUTO_TEST_CASE(batched_matmul_under_bf16_mixed_rounds_each_product) {
    const std::int64_t batch = 6, m = 20, n = 18, k = 40;
    const auto a = random_tensor<float>({batch, m, k}, 31, 1), b = random_tensor<float>({batch, n, k}, 31, 2);
    const auto c = ops::matmul<bf16_mixed>(a.view(), b.view(), false, true);
    double worst = 0;
    for (std::int64_t s = 0; s < batch; ++s)
        for (std::int64_t i = 0; i < m; ++i)
            for (std::int64_t j = 0; j < n; ++j) {
                double want = 0, mag = 0;
                for (std::int64_t p = 0; p < k; ++p) {
                    const double t = round_bf16(a.data()[(s * m + i) * k + p]) * round_bf16(b.data()[(s * n + j) * k + p]);
                    want += t;
                    mag += std::abs(t);
                }
                worst = std::max(worst, std::abs(c.data()[(s * m + i) * n + j] - want) / mag);
            }
    BOOST_TEST(worst <= (k + 2) * 0x1p-24);
}


BOOST_AUTO_TEST_CASE(packed_attention_under_bf16_mixed_rounds_its_products) {
    // Against fp64 attention on the unrounded operands: within bf16's error (the products' operands,
    // q, k, v and the probabilities, each rounded once), and not at fp32's accuracy (so the
    // products are rounded). The backward the same way against fp64's gradients.
    const std::int64_t batch = 2, tokens = 24, heads = 3, hd = 16, dim = heads * hd;
    const auto qkv = random_tensor<float>({batch, tokens, 3 * dim}, 41, 1);
    const auto dout = random_tensor<float>({batch, tokens, dim}, 41, 2);
    auto mixed = ops::packed_attention<bf16_mixed>(qkv.view(), heads);
    const auto dqkv = ops::packed_attention_backward<bf16_mixed>(dout.view(), qkv.view(), mixed.saved, heads);
    auto exact = ops::packed_attention(qkv.view(), heads);
    const auto dqkv_exact = ops::packed_attention_backward(dout.view(), qkv.view(), exact.saved, heads);
    tensor<double, cpu> qkv_d(qkv.shape()), dout_d(dout.shape());
    for (std::int64_t i = 0; i < qkv.numel(); ++i) qkv_d.data()[i] = qkv.data()[i];
    for (std::int64_t i = 0; i < dout.numel(); ++i) dout_d.data()[i] = dout.data()[i];
    auto reference = ops::packed_attention(qkv_d.view(), heads);
    const auto dqkv_reference = ops::packed_attention_backward(dout_d.view(), qkv_d.view(), reference.saved, heads);
    const auto rel = [](const auto& got, const tensor<double, cpu>& want) {
        double diff = 0, norm = 0;
        for (std::int64_t i = 0; i < want.numel(); ++i) {
            diff += (double(got.data()[i]) - want.data()[i]) * (double(got.data()[i]) - want.data()[i]);
            norm += want.data()[i] * want.data()[i];
        }
        return std::sqrt(diff / norm);
    };
    const double out_mixed = rel(mixed.out, reference.out), out_fp32 = rel(exact.out, reference.out);
    const double grad_mixed = rel(dqkv, dqkv_reference), grad_fp32 = rel(dqkv_exact, dqkv_reference);
    BOOST_TEST_MESSAGE("attention, relative to fp64: bf16 out " << out_mixed << ", grads " << grad_mixed << "; fp32 out " << out_fp32
                                                                << ", grads " << grad_fp32);
    const double u = bfloat16_unit_roundoff;
    BOOST_TEST(out_mixed <= 3 * u);
    BOOST_TEST(grad_mixed <= 6 * u);  // two products deep (dP = dO·Vᵀ, then dS·K)
    BOOST_TEST(out_mixed > 20 * out_fp32);
    BOOST_TEST(grad_mixed > 20 * grad_fp32);
    // Inference (no saved state) computes the same output as training's forward, bit for bit.
    nn::no_grad inference;
    const auto out_only = ops::packed_attention<bf16_mixed>(qkv.view(), heads);
    BOOST_TEST(std::memcmp(out_only.out.data(), mixed.out.data(), sizeof(float) * mixed.out.numel()) == 0);
}

BOOST_AUTO_TEST_CASE(dit_under_bf16_mixed_stays_within_bf16_error_of_fp32) {
    // The whole model: the same parameters (names and values) in a bf16_mixed and an fp32 DiT; the
    // outputs and every parameter's gradient differ by bf16 error (a few u = 2^-8, norm-wise),
    // not more (a product computed wrongly) and not less (products left in fp32).
    models::dit_config c;
    c.input_size = 8, c.patch_size = 2, c.in_channels = 4, c.hidden_size = 48, c.depth = 2, c.num_heads = 3, c.num_classes = 5;
    models::dit<float, cpu, bf16_mixed> mixed(c, 3);
    models::dit<float, cpu> exact(c, 3);
    randomize_parameters(mixed, 77);
    const auto from = nn::named_parameters(mixed);
    const auto to = nn::named_parameters(exact);
    copy_parameter_values(from, to);
    const auto x = random_tensor<float>({3, 4, 8, 8}, 5, 1);
    const auto t = tensor<float, cpu>::from_host({3}, std::vector<float>{0.1f, 0.5f, 0.9f});
    const auto y = tensor<std::int32_t, cpu>::from_host({3}, std::vector<std::int32_t>{0, 3, 5});
    const auto dout = random_tensor<float>({3, 4, 8, 8}, 5, 2);
    mixed.train(false, true);
    exact.train(false, true);
    nn::zero_grad(mixed);
    nn::zero_grad(exact);
    const auto out_mixed = mixed.forward(x.view(), t.view(), y.view());
    const auto out_exact = exact.forward(x.view(), t.view(), y.view());
    (void)mixed.backward(dout.view());
    (void)exact.backward(dout.view());
    const double out_diff = norm_relative_difference(out_mixed.view(), out_exact.view());
    double worst_grad = 0;
    std::string worst_name;
    for (std::size_t i = 0; i < from.size(); ++i) {
        if (!from[i].second->trainable) continue;
        const double d = norm_relative_difference(from[i].second->grad.view(), to[i].second->grad.view());
        if (d > worst_grad) worst_grad = d, worst_name = from[i].first;
    }
    BOOST_TEST_MESSAGE("DiT bf16 vs fp32: output " << out_diff << ", worst parameter gradient " << worst_grad << " (" << worst_name << ")");
    const double u = bfloat16_unit_roundoff;
    BOOST_TEST(out_diff <= 4 * u);
    BOOST_TEST(out_diff > 0.05 * u);
    BOOST_TEST(worst_grad <= 16 * u);
}

BOOST_AUTO_TEST_CASE(autoencoder_under_bf16_mixed_stays_within_bf16_error_of_fp32) {
    // The tokenizer end to end (encode, decode, both backwards) with the same parameters in a
    // bf16_mixed and an fp32 model: every convolution rounds (Winograd at 16 channels, im2col for
    // the 1×1, stride-2 and narrow ones), so the outputs and gradients differ by bf16 error, not
    // more and not less. The level attention's products stay fp32 (channels-first kernels).
    models::autoencoder_config c;
    c.in_channels = c.out_channels = 1;
    c.ch = 16;
    c.ch_mult = {1, 2};
    c.num_res_blocks = 1;
    c.z_channels = c.embed_dim = 4;
    c.resolution = 8;
    c.attn_resolutions = {4};
    c.norm_groups = 4;
    models::autoencoder_kl<float, cpu, bf16_mixed> mixed(c, 3);
    models::autoencoder_kl<float, cpu> exact(c, 3);
    static_assert(std::is_same_v<decltype(mixed)::precision, bf16_mixed>);
    randomize_parameters(mixed, 78);
    const auto from = nn::named_parameters(mixed);
    const auto to = nn::named_parameters(exact);
    copy_parameter_values(from, to);
    const auto x = random_tensor<float>({3, 1, 8, 8}, 6, 1);
    const auto dx_hat = random_tensor<float>({3, 1, 8, 8}, 6, 2);
    const auto dmoments = random_tensor<float>({3, 8, 4, 4}, 6, 3);
    const auto z = random_tensor<float>({3, 4, 4, 4}, 6, 4);
    nn::zero_grad(mixed);
    nn::zero_grad(exact);
    const auto m_mixed = mixed.encode(x.view()), m_exact = exact.encode(x.view());
    const auto r_mixed = mixed.decode(z.view()), r_exact = exact.decode(z.view());
    (void)mixed.decode_backward(dx_hat.view());
    (void)exact.decode_backward(dx_hat.view());
    const auto dx_mixed = mixed.encode_backward(dmoments.view()), dx_exact = exact.encode_backward(dmoments.view());
    const double moments_diff = norm_relative_difference(m_mixed.view(), m_exact.view());
    const double decoded_diff = norm_relative_difference(r_mixed.view(), r_exact.view());
    const double dx_diff = norm_relative_difference(dx_mixed.view(), dx_exact.view());
    double worst_grad = 0;
    std::string worst_name;
    for (std::size_t i = 0; i < from.size(); ++i) {
        // A key bias shifts every logit of a query's row alike, which softmax ignores: its exact
        // gradient is 0, and both models' values are rounding noise (no relative error to speak of).
        if (from[i].first.ends_with(".k.bias")) continue;
        const double d = norm_relative_difference(from[i].second->grad.view(), to[i].second->grad.view());
        if (d > worst_grad) worst_grad = d, worst_name = from[i].first;
    }
    BOOST_TEST_MESSAGE("autoencoder bf16 vs fp32: moments " << moments_diff << ", decoded " << decoded_diff << ", dx " << dx_diff
                                                            << ", worst parameter gradient " << worst_grad << " (" << worst_name << ")");
    const double u = bfloat16_unit_roundoff;
    for (const double d : {moments_diff, decoded_diff, dx_diff}) {
        BOOST_TEST(d <= 6 * u);  // the decoder is 14 rounded convolutions deep (measured 3u)
        BOOST_TEST(d > 0.05 * u);
    }
    BOOST_TEST(worst_grad <= 16 * u);
}

BOOST_AUTO_TEST_CASE(a_run_names_its_precision_and_keeps_it) {
    // with_precision instantiates the job for the named policy; other names are refused.
    BOOST_TEST(with_precision("fp32", []<class P>() { return std::string(P::name); }) == "fp32");
    BOOST_TEST(with_precision("bf16", []<class P>() { return P::rounds_operands; }));
    BOOST_CHECK_EXCEPTION(with_precision("fp16", []<class P>() { return 0; }), std::invalid_argument, [](const std::invalid_argument& e) {
        return std::string(e.what()) == "--precision fp16: expected fp32 or bf16";
    });
    // A DiT run saves its precision; configurations saved before it existed read as fp32, and an
    // fp32 run writes none (so that they still compare equal).
    train::dit_run_config c;
    BOOST_TEST(!c.to_json().contains("precision"));
    c.precision = "bf16";
    BOOST_TEST(train::dit_run_config::from_json(c.to_json()).precision == "bf16");
    auto old = c.to_json();
    old.erase("precision");
    BOOST_TEST(train::dit_run_config::from_json(old).precision == "fp32");
}

BOOST_AUTO_TEST_SUITE_END()
