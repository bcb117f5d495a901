#define BOOST_TEST_MODULE elementwise
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "support/errors.hpp"
#include "support/fixture.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/ops/broadcast.hpp"
#include "vediff/ops/elementwise.hpp"

using namespace vediff;
using namespace vediff::testing;

namespace {
using real_types = boost::mpl::list<float, double>;

template <class T>
using views = std::vector<tensor_view<T, cpu>>;
template <class T>
using grads = std::vector<tensor<T, cpu>>;

/// Naive broadcast index: the element of `small` that pairs with flat index i of `full`.
std::int64_t small_index(const tensor_shape& full, const tensor_shape& small, std::int64_t i) {
    std::int64_t off = 0, stride = 1;
    for (int a = full.rank() - 1; a >= 0; --a) {
        const std::int64_t coord = i % full[a];
        i /= full[a];
        if (small[a] != 1) off += coord * stride;
        stride *= small[a];
    }
    return off;
}
} // namespace

BOOST_AUTO_TEST_SUITE(same_shape)

BOOST_AUTO_TEST_CASE(hand_values) {
    auto a = tensor<float>::from_host({2, 2}, {1, 2, 3, 4});
    auto b = tensor<float>::from_host({2, 2}, {4, 3, 2, 0.5f});
    auto s = ops::add(a, b), d = ops::sub(a, b), m = ops::mul(a, b), q = ops::div(a, b);
    const std::vector<float> add_ref{5, 5, 5, 4.5f}, sub_ref{-3, -1, 1, 3.5f}, mul_ref{4, 6, 6, 2}, div_ref{0.25f, 2.0f / 3, 1.5f, 8};
    for (std::int64_t i = 0; i < 4; ++i) {
        BOOST_TEST(s.data()[i] == add_ref[static_cast<std::size_t>(i)]);
        BOOST_TEST(d.data()[i] == sub_ref[static_cast<std::size_t>(i)]);
        BOOST_TEST(m.data()[i] == mul_ref[static_cast<std::size_t>(i)]);
        BOOST_TEST(q.data()[i] == div_ref[static_cast<std::size_t>(i)]);
    }
    auto sc = ops::scale(a, 2.0f);
    auto as = ops::add_scalar(a, 0.5);  // the scalar converts to the tensor's type
    BOOST_TEST(sc.at(1, 1) == 8.0f);
    BOOST_TEST(as.at(0, 1) == 2.5f);

    auto y = a.clone();
    ops::axpy(y.view(), b.view(), 2.0f);
    BOOST_TEST(y.at(1, 0) == 7.0f);
    ops::axpby(y.view(), b.view(), 0.5, 2.0);  // y = 0.5 b + 2 y
    BOOST_TEST(y.at(1, 0) == 15.0f);
    ops::fill(y.view(), -1.0f);
    BOOST_TEST(y.at(0, 1) == -1.0f);
    ops::copy(y.view(), a.view());
    BOOST_TEST(y.at(1, 1) == 4.0f);
}

BOOST_AUTO_TEST_CASE(large_arrays_use_every_element) {
    // Beyond the parallel grain: every element, in every thread's range, is written.
    const std::int64_t n = 100003;
    auto a = random_tensor<double>({n}, 1), b = random_tensor<double>({n}, 2);
    auto m = ops::mul(a, b);
    auto q = ops::div(m, b);
    for (std::int64_t i = 0; i < n; i += 997) BOOST_REQUIRE_CLOSE(q.data()[i], a.data()[i], 1e-9);
    BOOST_TEST(q.data()[n - 1] == a.data()[n - 1], boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(shape_errors_name_op_and_shapes) {
    auto a = tensor<float>::zeros({2, 3}), b = tensor<float>::zeros({3, 2});
    for (auto msg : {shape_error_message([&] { (void)ops::add(a, b); }), shape_error_message([&] { (void)ops::div(a, b); }),
                     shape_error_message([&] { ops::axpby(a.view(), b.view(), 1.0f, 1.0f); })}) {
        BOOST_TEST(msg.find("(2, 3)") != std::string::npos);
        BOOST_TEST(msg.find("(3, 2)") != std::string::npos);
    }
    BOOST_TEST(shape_error_message([&] { (void)ops::div(a, b); }).find("div") == 0u);
    BOOST_TEST(shape_error_message([&] { ops::axpby(a.view(), b.view(), 1.0f, 1.0f); }).find("axpby") == 0u);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(gradients, T, real_types) {
    auto a = random_tensor<T>({3, 4}, 11);
    auto b = ops::add_scalar(random_tensor<T>({3, 4}, 12, 0, 0.3), T(2));  // divisor away from 0
    const views<T> in{a, b};
    check_op_gradients<T>("add", [](const views<T>& x) { return ops::add(x[0], x[1]); },
                          [](const tensor_view<T, cpu>& dy, const views<T>&) {
                              grads<T> g;
                              g.push_back(tensor<T>::copy_of(dy));
                              g.push_back(tensor<T>::copy_of(dy));
                              return g;
                          }, in);
    check_op_gradients<T>("sub", [](const views<T>& x) { return ops::sub(x[0], x[1]); },
                          [](const tensor_view<T, cpu>& dy, const views<T>&) {
                              grads<T> g;
                              g.push_back(tensor<T>::copy_of(dy));
                              g.push_back(ops::scale(dy, T(-1)));
                              return g;
                          }, in);
    check_op_gradients<T>("mul", [](const views<T>& x) { return ops::mul(x[0], x[1]); },
                          [](const tensor_view<T, cpu>& dy, const views<T>& x) {
                              grads<T> g;
                              g.push_back(ops::mul(dy, x[1]));
                              g.push_back(ops::mul(dy, x[0]));
                              return g;
                          }, in);
    check_op_gradients<T>("div", [](const views<T>& x) { return ops::div(x[0], x[1]); },
                          [](const tensor_view<T, cpu>& dy, const views<T>& x) {
                              // d(a/b) = da/b − a·db/b²
                              grads<T> g;
                              g.push_back(ops::div(dy, x[1]));
                              auto q = ops::div(ops::div(ops::mul(dy, x[0]), x[1]), x[1]);
                              g.push_back(ops::scale(q, T(-1)));
                              return g;
                          }, in);
    check_op_gradients<T>("scale", [](const views<T>& x) { return ops::scale(x[0], T(-1.5)); },
                          [](const tensor_view<T, cpu>& dy, const views<T>&) {
                              grads<T> g;
                              g.push_back(ops::scale(dy, T(-1.5)));
                              return g;
                          }, views<T>{a});
    check_op_gradients<T>("add_scalar", [](const views<T>& x) { return ops::add_scalar(x[0], 3.0); },
                          [](const tensor_view<T, cpu>& dy, const views<T>&) {
                              grads<T> g;
                              g.push_back(tensor<T>::copy_of(dy));
                              return g;
                          }, views<T>{a});
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(broadcast)

BOOST_AUTO_TEST_CASE(hand_values_per_channel) {
    // x (1, 2, 1, 2) plus a per-channel bias (2) seen as (1, 2, 1, 1).
    auto x = tensor<float>::from_host({1, 2, 1, 2}, {1, 2, 3, 4});
    auto b = tensor<float>::from_host({2}, {10, 100});
    auto y = ops::add_broadcast(x, b.reshape({1, 2, 1, 1}));
    const std::vector<float> ref{11, 12, 103, 104};
    for (std::int64_t i = 0; i < 4; ++i) BOOST_TEST(y.data()[i] == ref[static_cast<std::size_t>(i)]);
    auto m = ops::mul_broadcast(x, b.reshape({1, 2, 1, 1}));
    BOOST_TEST(m.at(0, 1, 0, 1) == 400.0f);
    auto s = ops::sum_to(x, {1, 2, 1, 1});
    BOOST_TEST(s.at(0, 0, 0, 0) == 3.0f);
    BOOST_TEST(s.at(0, 1, 0, 0) == 7.0f);
}

BOOST_AUTO_TEST_CASE(torch_reference) {
    const auto f = load_fixture("misc.txt");
    const auto x = f.get("bc_x"), c = f.get("bc_c"), bc = f.get("bc_bc");
    check_close(ops::add_broadcast(x, c.reshape({1, 3, 1, 1})), f.get("add_c"), 1e-12, 1e-12, "add per-channel");
    check_close(ops::mul_broadcast(x, c.reshape({1, 3, 1, 1})), f.get("mul_c"), 1e-12, 1e-12, "mul per-channel");
    check_close(ops::add_broadcast(x, bc.reshape({2, 3, 1, 1})), f.get("add_bc"), 1e-12, 1e-12, "add per-sample-channel");
    check_close(ops::mul_broadcast(x, bc.reshape({2, 3, 1, 1})), f.get("mul_bc"), 1e-12, 1e-12, "mul per-sample-channel");
    auto g = ops::mul_broadcast_backward(f.get("mul_bc_dy").view(), x.view(), bc.reshape({2, 3, 1, 1}));
    check_close(g.dx, f.get("mul_bc_dx"), 1e-12, 1e-12, "mul_broadcast_backward dx");
    check_close(g.db.reshape({2, 3}), f.get("mul_bc_db"), 1e-12, 1e-12, "mul_broadcast_backward db");

    // DiT: x (B, N, D) modulated by shift, scale (B, D) unsqueezed to (B, 1, D); gate likewise.
    const auto t = f.get("mod_x"), shift = f.get("mod_shift"), scale = f.get("mod_scale"), gate = f.get("mod_gate");
    check_close(ops::modulate(t, shift.reshape({2, 1, 8}), scale.reshape({2, 1, 8})), f.get("modulate"), 1e-12, 1e-12, "modulate");
    auto mg = ops::modulate_backward(f.get("modulate_dy").view(), t.view(), scale.reshape({2, 1, 8}));
    check_close(mg.dx, f.get("modulate_dx"), 1e-12, 1e-12, "modulate dx");
    check_close(mg.dshift.reshape({2, 8}), f.get("modulate_dshift"), 1e-12, 1e-12, "modulate dshift");
    check_close(mg.dscale.reshape({2, 8}), f.get("modulate_dscale"), 1e-12, 1e-12, "modulate dscale");
    check_close(ops::mul_broadcast(t, gate.reshape({2, 1, 8})), f.get("gated"), 1e-12, 1e-12, "gate");

    // float follows the same reference to float precision.
    const auto xf = f.get<float>("bc_x"), bcf = f.get<float>("bc_bc");
    check_close(ops::mul_broadcast(xf, bcf.reshape({2, 3, 1, 1})), f.get("mul_bc"), 1e-6, 1e-6, "mul per-sample-channel (float)");
}

BOOST_AUTO_TEST_CASE(every_pattern_matches_naive_loops) {
    // Property: for every subset of broadcast axes of a rank-5 shape, broadcast_to and sum_to
    // agree with direct index arithmetic (covers leading, trailing and alternating runs, and
    // axes of extent 1 in x).
    const tensor_shape full{3, 1, 4, 2, 5};
    for (int mask = 0; mask < 32; ++mask) {
        tensor_shape small;
        for (int a = 0; a < 5; ++a) small.push_back((mask >> a) & 1 ? 1 : full[a]);
        BOOST_TEST_CONTEXT("small shape " << small.to_string()) {
            auto b = random_tensor<double>(small, 3, static_cast<std::uint64_t>(mask));
            auto x = random_tensor<double>(full, 4, static_cast<std::uint64_t>(mask));
            auto e = ops::broadcast_to(b, full);
            auto m = ops::mul_broadcast(x, b);
            auto s = ops::sum_to(x, small);
            std::vector<double> ref_sum(static_cast<std::size_t>(small.numel()), 0.0);
            bool ok = true;
            for (std::int64_t i = 0; i < full.numel(); ++i) {
                const auto k = small_index(full, small, i);
                ok = ok && e.data()[i] == b.data()[k] && m.data()[i] == x.data()[i] * b.data()[k];
                ref_sum[static_cast<std::size_t>(k)] += x.data()[i];
            }
            BOOST_TEST(ok);
            for (std::int64_t k = 0; k < small.numel(); ++k)
                BOOST_TEST(s.data()[k] == ref_sum[static_cast<std::size_t>(k)], boost::test_tools::tolerance(1e-12));
        }
    }
}

BOOST_AUTO_TEST_CASE(fused_and_in_place_forms_match_their_compositions) {
    // The inference path's ops: addcmul_broadcast (in place too) and modulate_in_place give the
    // composed ops' values, for a gate per (sample, feature) and per sample.
    auto x = random_tensor<float>({3, 5, 8}, 1), a = random_tensor<float>({3, 5, 8}, 2);
    for (const tensor_shape small : {tensor_shape{3, 1, 8}, tensor_shape{3, 1, 1}}) {
        auto g = random_tensor<float>(small, 3), shift = random_tensor<float>(small, 4);
        auto fused = ops::addcmul_broadcast(x, a, g);
        const auto product = ops::mul_broadcast(a, g);
        double worst = 0;  // one rounding fewer (FMA) is the only difference allowed
        for (std::int64_t i = 0; i < x.numel(); ++i)
            worst = std::max(worst, std::abs(double(fused.data()[i]) - (double(x.data()[i]) + double(product.data()[i]))) /
                                        (std::abs(double(x.data()[i])) + std::abs(double(product.data()[i]))));
        BOOST_TEST(worst < 1e-6);
        auto in_place = x.clone();
        ops::addcmul_broadcast_in_place(in_place.view(), a.view(), g.view());
        BOOST_TEST(in_place.to_vector() == fused.to_vector(), boost::test_tools::per_element());
        auto modulated = x.clone();
        ops::modulate_in_place(modulated.view(), shift.view(), g.view());
        BOOST_TEST(modulated.to_vector() == ops::modulate(x.view(), shift.view(), g.view()).to_vector(), boost::test_tools::per_element());
    }
    const auto msg = shape_error_message([&] { ops::addcmul_broadcast_in_place(x.view(), a.view(), tensor<float>::zeros({3, 2, 8}).view()); });
    BOOST_TEST(msg.find("addcmul_broadcast_in_place") == 0u, msg);
}

BOOST_AUTO_TEST_CASE(large_sum_to_is_exact_in_double_accumulation) {
    // 2^20 float ones plus a float-unfriendly offset: double accumulation keeps the sum exact.
    auto x = tensor<float>::full({4, 262144}, 1.0f);
    x.at(0, 0) = 1e7f;
    auto s = ops::sum_to(x, {1, 1});
    BOOST_TEST(double(s.data()[0]) == 1e7 + 1048575.0);
    auto per_row = ops::sum_to(x, {4, 1});
    BOOST_TEST(per_row.at(3, 0) == 262144.0f);
}

BOOST_AUTO_TEST_CASE(shape_errors_name_op_and_shapes) {
    auto x = tensor<float>::zeros({2, 3, 4}), b = tensor<float>::zeros({2, 4});
    auto msg = shape_error_message([&] { (void)ops::add_broadcast(x, b); });  // rank differs: needs (2, 1, 4)
    BOOST_TEST(msg.find("add_broadcast") == 0u);
    BOOST_TEST(msg.find("(2, 3, 4)") != std::string::npos);
    BOOST_TEST(msg.find("(2, 4)") != std::string::npos);
    msg = shape_error_message([&] { (void)ops::mul_broadcast(x, tensor<float>::zeros({2, 2, 4}).view()); });
    BOOST_TEST(msg.find("mul_broadcast") == 0u);
    BOOST_TEST(msg.find("(2, 2, 4)") != std::string::npos);
    msg = shape_error_message([&] { (void)ops::modulate(x, b.reshape({2, 1, 4}), tensor<float>::zeros({2, 1, 3}).view()); });
    BOOST_TEST(msg.find("modulate") == 0u);
    BOOST_TEST(msg.find("(2, 1, 3)") != std::string::npos);
    msg = shape_error_message([&] { (void)ops::sum_to(x, {2, 1, 3}); });
    BOOST_TEST(msg.find("sum_to") == 0u);
    BOOST_TEST(msg.find("(2, 1, 3)") != std::string::npos);
    BOOST_CHECK_NO_THROW((void)ops::add_broadcast(x, b.reshape({2, 1, 4})));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(gradients, T, real_types) {
    auto x = random_tensor<T>({2, 3, 4, 5}, 21);
    auto c = random_tensor<T>({1, 3, 1, 1}, 22);
    auto bc = random_tensor<T>({2, 3, 1, 1}, 23);
    auto tok = random_tensor<T>({2, 6, 8}, 24);
    auto shift = random_tensor<T>({2, 1, 8}, 25), scale = random_tensor<T>({2, 1, 8}, 26);

    for (const tensor_view<T, cpu> b : {c.view(), bc.view()}) {
        check_op_gradients<T>("add_broadcast " + b.shape().to_string(), [](const views<T>& v) { return ops::add_broadcast(v[0], v[1]); },
                              [](const tensor_view<T, cpu>& dy, const views<T>& v) {
                                  auto g = ops::add_broadcast_backward(dy, v[1].shape());
                                  grads<T> out;
                                  out.push_back(std::move(g.dx));
                                  out.push_back(std::move(g.db));
                                  return out;
                              }, views<T>{x, b});
        check_op_gradients<T>("mul_broadcast " + b.shape().to_string(), [](const views<T>& v) { return ops::mul_broadcast(v[0], v[1]); },
                              [](const tensor_view<T, cpu>& dy, const views<T>& v) {
                                  auto g = ops::mul_broadcast_backward(dy, v[0], v[1]);
                                  grads<T> out;
                                  out.push_back(std::move(g.dx));
                                  out.push_back(std::move(g.db));
                                  return out;
                              }, views<T>{x, b});
    }
    check_op_gradients<T>("modulate", [](const views<T>& v) { return ops::modulate(v[0], v[1], v[2]); },
                          [](const tensor_view<T, cpu>& dy, const views<T>& v) {
                              auto g = ops::modulate_backward(dy, v[0], v[2]);
                              grads<T> out;
                              out.push_back(std::move(g.dx));
                              out.push_back(std::move(g.dshift));
                              out.push_back(std::move(g.dscale));
                              return out;
                          }, views<T>{tok, shift, scale});
    // addcmul_broadcast = x + a·b, whose backward is dx = dy and mul_broadcast_backward for (a, b).
    check_op_gradients<T>("addcmul_broadcast", [](const views<T>& v) { return ops::addcmul_broadcast(v[0], v[1], v[2]); },
                          [](const tensor_view<T, cpu>& dy, const views<T>& v) {
                              auto g = ops::mul_broadcast_backward(dy, v[1], v[2]);
                              grads<T> out;
                              out.push_back(tensor<T, cpu>::copy_of(dy));
                              out.push_back(std::move(g.dx));
                              out.push_back(std::move(g.db));
                              return out;
                          }, views<T>{tok, tok.clone().view(), scale});
    // broadcast_to and sum_to are each other's adjoint.
    check_op_gradients<T>("broadcast_to", [](const views<T>& v) { return ops::broadcast_to(v[0], {2, 6, 8}); },
                          [](const tensor_view<T, cpu>& dy, const views<T>& v) {
                              grads<T> out;
                              out.push_back(ops::sum_to(dy, v[0].shape()));
                              return out;
                          }, views<T>{shift});
    check_op_gradients<T>("sum_to", [](const views<T>& v) { return ops::sum_to(v[0], {1, 3, 1, 1}); },
                          [](const tensor_view<T, cpu>& dy, const views<T>& v) {
                              grads<T> out;
                              out.push_back(ops::broadcast_to(dy, v[0].shape()));
                              return out;
                          }, views<T>{x});
}

BOOST_AUTO_TEST_SUITE_END()
