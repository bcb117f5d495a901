#define BOOST_TEST_MODULE embedding
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "support/errors.hpp"
#include "support/fixture.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/nn/embedding.hpp"
#include "vediff/ops/embedding.hpp"

using namespace vediff;
using namespace vediff::testing;

namespace {
using real_types = boost::mpl::list<float, double>;

template <class T>
using views = std::vector<tensor_view<T, cpu>>;

tensor<std::int32_t> indices_from(const tensor<double>& t) {
    auto out = tensor<std::int32_t>::empty(t.shape());
    for (std::int64_t i = 0; i < t.numel(); ++i) out.data()[i] = static_cast<std::int32_t>(t.data()[i]);
    return out;
}

/// The embedding layer behind the nn::layer interface for check_layer_gradients: fixed indices,
/// y = embedding(indices) + x, so the check probes weight.grad (and a trivial input gradient).
template <class T>
struct fixed_index_embedding {
    using value_type = T;
    using device_type = cpu;
    nn::embedding<T> inner;
    tensor<std::int32_t> indices;
    tensor<T> forward(const tensor_view<T, cpu>& x) { return ops::add(inner.forward(indices), x); }
    tensor<T> backward(const tensor_view<T, cpu>& dy) {
        inner.backward(dy);
        return tensor<T>::copy_of(dy);
    }
    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        inner.for_each_parameter(f, prefix);
    }
};
} // namespace

BOOST_AUTO_TEST_CASE(hand_values_and_repeated_indices) {
    auto table = tensor<float>::from_host({3, 2}, {0, 1, 10, 11, 20, 21});
    auto idx = tensor<std::int32_t>::from_host({4}, {2, 0, 2, 1});
    auto y = ops::embedding(table, idx);
    BOOST_TEST(y.shape() == (tensor_shape{4, 2}));
    const std::vector<float> ref{20, 21, 0, 1, 20, 21, 10, 11};
    BOOST_TEST(y.to_vector() == ref);
    auto dy = tensor<float>::from_host({4, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
    auto dt = ops::embedding_backward(dy, idx, 3);
    const std::vector<float> dref{3, 4, 7, 8, 6, 8};  // row 2 receives rows 0 and 2 of dy
    BOOST_TEST(dt.to_vector() == dref);
    ops::embedding_accumulate_grad(dt.view(), dy.view(), idx.view());
    BOOST_TEST(dt.at(2, 1) == 16.0f);
}

BOOST_AUTO_TEST_CASE(torch_reference) {
    const auto f = load_fixture("misc.txt");
    const auto table = f.get("emb_table");
    const auto idx = indices_from(f.get("emb_idx"));
    check_close(ops::embedding(table, idx), f.get("emb_y"), 0, 1e-15, "F.embedding");
    check_close(ops::embedding_backward(f.get("emb_dy").view(), idx.view(), 6), f.get("emb_dtable"), 1e-14, 1e-14,
                "F.embedding backward");

    nn::embedding<float> layer;
    layer.weight = nn::parameter<float, cpu>({6, 4});
    ops::copy(layer.weight.value.view(), f.get<float>("emb_table").view());
    check_close(layer.forward(idx), f.get("emb_y"), 1e-7, 1e-7, "embedding layer");
    layer.backward(f.get<float>("emb_dy"));
    check_close(layer.weight.grad, f.get("emb_dtable"), 1e-6, 1e-6, "embedding layer weight.grad");
}

BOOST_AUTO_TEST_CASE(layer_names_and_init) {
    nn::embedding<double> e(1001, 64, 42, 0.02);  // DiT's label table: 1000 classes + the null class
    BOOST_TEST(e.num_embeddings() == 1001);
    BOOST_TEST(e.embedding_dim() == 64);
    const auto named = nn::named_parameters(e);
    BOOST_REQUIRE(named.size() == 1u);
    BOOST_TEST(named[0].first == "weight");
    double sum = 0, sq = 0;
    const auto n = static_cast<double>(e.weight.value.numel());
    for (double v : e.weight.value.span()) {
        sum += v;
        sq += v * v;
    }
    BOOST_TEST(std::abs(sum / n) < 0.001);
    BOOST_TEST(std::sqrt(sq / n) == 0.02, boost::test_tools::tolerance(0.02));
    // Element by element from the key of (seed, "weight") (nn/init.hpp).
    BOOST_TEST(e.weight.value.at(3, 5) == 0.02 * philox_normal<double>(nn::parameter_key(42, "weight"), 0, 0, 3 * 64 + 5));
    // Prefixes compose as in a state_dict: y_embedder.embedding_table.weight.
    std::string name;
    e.for_each_parameter([&](const std::string& nm, auto&) { name = nm; }, "y_embedder.embedding_table");
    BOOST_TEST(name == "y_embedder.embedding_table.weight");
}

BOOST_AUTO_TEST_CASE(errors_name_op_index_and_shapes) {
    auto table = tensor<float>::zeros({3, 2});
    auto bad = tensor<std::int32_t>::from_host({3}, {0, 3, 1});
    auto msg = shape_error_message([&] { (void)ops::embedding(table, bad); });
    BOOST_TEST(msg.find("embedding") == 0u);
    BOOST_TEST(msg.find("index 3 at position 1") != std::string::npos);
    BOOST_TEST(msg.find("(3, 2)") != std::string::npos);
    auto neg = tensor<std::int32_t>::from_host({1}, {-1});
    BOOST_CHECK_THROW((void)ops::embedding(table, neg), shape_error);
    auto ok = tensor<std::int32_t>::from_host({2}, {0, 1});
    msg = shape_error_message([&] { (void)ops::embedding_backward(tensor<float>::zeros({3, 2}).view(), ok.view(), 3); });
    BOOST_TEST(msg.find("embedding_backward") == 0u);
    BOOST_TEST(msg.find("(3, 2)") != std::string::npos);
    BOOST_TEST(msg.find("(2)") != std::string::npos);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(gradients, T, real_types) {
    // Repeated indices, so the scatter-add must accumulate.
    auto idx = tensor<std::int32_t>::from_host({2, 3}, {4, 0, 4, 2, 2, 1});
    auto table = random_tensor<T>({5, 3}, 9);
    check_op_gradients<T>("embedding", [&](const views<T>& v) { return ops::embedding(v[0], idx.view()); },
                          [&](const tensor_view<T, cpu>& dy, const views<T>& v) {
                              std::vector<tensor<T>> g;
                              g.push_back(ops::embedding_backward(dy, idx.view(), v[0].dim(0)));
                              return g;
                          }, views<T>{table});

    fixed_index_embedding<T> layer{nn::embedding<T>(5, 3, 1), tensor<std::int32_t>::copy_of(idx)};
    check_layer_gradients("embedding layer", layer, {2, 3, 3});
}
