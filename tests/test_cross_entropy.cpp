#define BOOST_TEST_MODULE cross_entropy
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "support/errors.hpp"
#include "support/fixture.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/ops/cross_entropy.hpp"

using namespace vediff;
using namespace vediff::testing;

namespace {
using real_types = boost::mpl::list<float, double>;

template <class T>
using views = std::vector<tensor_view<T, cpu>>;

tensor<std::int32_t> labels_from(const tensor<double>& t) {
    auto out = tensor<std::int32_t>::empty(t.shape());
    for (std::int64_t i = 0; i < t.numel(); ++i) out.data()[i] = static_cast<std::int32_t>(t.data()[i]);
    return out;
}
} // namespace

BOOST_AUTO_TEST_CASE(closed_forms) {
    // Uniform logits over K classes: loss ln K; the gradient is (1/K − onehot)/B.
    auto z = tensor<double>::zeros({2, 4});
    auto y = tensor<std::int32_t>::from_host({2}, {1, 3});
    BOOST_TEST(ops::cross_entropy(z, y).to_vector()[0] == std::log(4.0), boost::test_tools::tolerance(1e-14));
    auto d = ops::cross_entropy_backward(z, y);
    BOOST_TEST(d.at(0, 0) == 0.125, boost::test_tools::tolerance(1e-14));
    BOOST_TEST(d.at(0, 1) == (0.25 - 1) / 2, boost::test_tools::tolerance(1e-14));
    auto d3 = ops::cross_entropy_backward(z, y, 3.0);  // scaled by the loss gradient
    BOOST_TEST(d3.at(1, 3) == 3 * (0.25 - 1) / 2, boost::test_tools::tolerance(1e-14));
    // Two classes with logits (0, a): loss log(1 + e^a) for label 0.
    auto two = tensor<double>::from_host({1, 2}, {0, 2});
    auto zero = tensor<std::int32_t>::from_host({1}, {0});
    BOOST_TEST(ops::cross_entropy(two, zero).to_vector()[0] == std::log1p(std::exp(2.0)), boost::test_tools::tolerance(1e-14));
}

BOOST_AUTO_TEST_CASE(torch_reference_and_stability) {
    const auto f = load_fixture("misc.txt");
    const auto labels = labels_from(f.get("ce_labels"));
    const auto logits = f.get("ce_logits");
    check_close(ops::cross_entropy(logits, labels), f.get("ce_loss"), 1e-13, 1e-13, "F.cross_entropy");
    check_close(ops::cross_entropy_backward(logits, labels), f.get("ce_dlogits"), 1e-12, 1e-14, "F.cross_entropy grad");
    // Logits around 1000 overflow a naive exp; log-sum-exp must not.
    const auto big = f.get("ce_big_logits");
    check_close(ops::cross_entropy(big, labels), f.get("ce_big_loss"), 1e-12, 1e-12, "F.cross_entropy, large logits");
    check_close(ops::cross_entropy_backward(big, labels), f.get("ce_big_dlogits"), 1e-10, 1e-14, "grad, large logits");
    const auto bigf = f.get<float>("ce_big_logits");
    const auto lf = ops::cross_entropy(bigf, labels);
    BOOST_TEST(std::isfinite(lf.to_vector()[0]));
    check_close(lf, f.get("ce_big_loss"), 1e-4, 1e-4, "large logits (float)");

    const auto pred = ops::argmax(logits);
    const auto ref = f.get("ce_argmax");
    for (std::int64_t i = 0; i < 5; ++i) BOOST_TEST(pred.data()[i] == static_cast<std::int32_t>(ref.data()[i]));
}

BOOST_AUTO_TEST_CASE(argmax_and_accuracy) {
    auto z = tensor<float>::from_host({4, 3}, {0, 5, 1, /**/ 2, 2, 1, /**/ -1, -3, -2, /**/ 0, 0, 9});
    auto pred = ops::argmax(z);
    const std::vector<std::int32_t> ref{1, 0, 0, 2};  // ties go to the lowest index
    BOOST_TEST(pred.to_vector() == ref);
    auto y = tensor<std::int32_t>::from_host({4}, {1, 1, 0, 0});
    BOOST_TEST(ops::accuracy(z, y) == 0.5);
}

BOOST_AUTO_TEST_CASE(errors_name_op_and_shapes) {
    auto z = tensor<float>::zeros({3, 4});
    auto y2 = tensor<std::int32_t>::zeros({2});
    auto msg = shape_error_message([&] { (void)ops::cross_entropy(z, y2); });
    BOOST_TEST(msg.find("cross_entropy") == 0u);
    BOOST_TEST(msg.find("(3, 4)") != std::string::npos);
    BOOST_TEST(msg.find("(2)") != std::string::npos);
    auto bad = tensor<std::int32_t>::from_host({3}, {0, 4, 1});
    msg = shape_error_message([&] { (void)ops::cross_entropy_backward(z, bad); });
    BOOST_TEST(msg.find("cross_entropy_backward") == 0u);
    BOOST_TEST(msg.find("label 4 of row 1") != std::string::npos);
    msg = shape_error_message([&] { (void)ops::argmax(tensor<float>::zeros({3}).view()); });
    BOOST_TEST(msg.find("argmax") == 0u);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(gradients, T, real_types) {
    auto logits = random_tensor<T>({6, 5}, 13, 0, 2.0);
    auto labels = tensor<std::int32_t>::from_host({6}, {0, 4, 2, 2, 1, 3});
    check_op_gradients<T>("cross_entropy", [&](const views<T>& v) { return ops::cross_entropy(v[0], labels.view()); },
                          [&](const tensor_view<T, cpu>& dy, const views<T>& v) {
                              std::vector<tensor<T>> g;
                              g.push_back(ops::cross_entropy_backward(v[0], labels.view(), dy.data()[0]));
                              return g;
                          }, views<T>{logits});
}
