#pragma once
// Embedding table layer, as nn.Embedding: parameter `weight` (num, dim) (DiT's
// y_embedder.embedding_table.weight). Its input is integer indices, not a tensor of T, so it has
// forward(indices) and a backward(dy) that only accumulates weight.grad; it is not an nn::layer
// and is composed by hand (the label embedder of a DiT, for instance).
#include <cstdint>
#include <string>

#include "vediff/nn/init.hpp"
#include "vediff/nn/layer.hpp"
#include "vediff/ops/embedding.hpp"

namespace vediff::nn {

template <class T = float, device D = cpu>
struct embedding {
    using value_type = T;
    using device_type = D;

    parameter<T, D> weight;  // (num, dim)

    embedding() = default;
    /// Rows drawn from N(0, stddev²) as nn::initialize(*this, seed) draws them (nn.Embedding's
    /// default stddev is 1; DiT initializes its label table with 0.02).
    embedding(std::int64_t num, std::int64_t dim, std::uint64_t seed = 0, double stddev = 1.0)
        : weight(make_parameter<T, D>({num, dim}, init_rule::normal(stddev), parameter_key(seed, "weight"))) {}

    std::int64_t num_embeddings() const { return weight.shape()[0]; }
    std::int64_t embedding_dim() const { return weight.shape()[1]; }

    /// indices (...) → (..., dim). Keeps a view of the indices: the caller keeps them alive
    /// until backward returns.
    tensor<T, D> forward(tensor<std::int32_t, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<std::int32_t, D>& indices) {
        indices_ = record_.keep() ? indices : tensor_view<std::int32_t, D>{};
        return ops::embedding(weight.value.view(), indices);
    }

    /// Adds dy (..., dim) into weight.grad at the rows of the last forward's indices.
    void backward(const tensor_view<T, D>& dy) {
        const bool release = record_.spend("embedding");
        ops::embedding_accumulate_grad(weight.grad.view(), dy, indices_);
        if (release) indices_ = {};
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        f(join_name(prefix, "weight"), weight);
    }

private:
    backward_record record_;
    tensor_view<std::int32_t, D> indices_;  // (...), owned by the caller
};

} // namespace vediff::nn
