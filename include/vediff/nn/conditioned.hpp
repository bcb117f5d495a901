#pragma once
// Conditioned layers: a layer of two inputs, the tokens x (B, N, D) and a conditioning vector
// c (B, D) (a DiT block's timestep + label embedding). The contract mirrors nn::layer:
//   tensor forward(const tensor_view& x, const tensor_view& c)   caches what backward needs;
//   tensor backward(const tensor_view& dy, tensor& dc)           accumulates (+=) parameter
//                                                                gradients and dc, returns dx;
//   for_each_parameter(visitor, prefix).
// Both inputs must outlive backward, so forward deletes its rvalue overloads as plain layers do.
// nn::conditioned_stack<Block> chains runtime-many blocks, all fed the same c, named "0", "1", ...
// like nn.ModuleList (a DiT's `blocks.0...`).
#include <concepts>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "vediff/nn/gradient_listener.hpp"
#include "vediff/nn/layer.hpp"
#include "vediff/ops/elementwise.hpp"

namespace vediff::nn {

template <class L>
concept conditioned_layer =
    requires(L& l, const tensor_view<typename L::value_type, typename L::device_type>& x,
             tensor<typename L::value_type, typename L::device_type>& dc) {
        typename L::value_type;
        typename L::device_type;
        { l.forward(x, x) } -> std::same_as<tensor<typename L::value_type, typename L::device_type>>;
        { l.backward(x, dc) } -> std::same_as<tensor<typename L::value_type, typename L::device_type>>;
        l.for_each_parameter(detail::any_parameter_visitor{}, std::string{});
    } &&
    !requires(L& l, tensor<typename L::value_type, typename L::device_type>&& t,
              const tensor_view<typename L::value_type, typename L::device_type>& v) { l.forward(std::move(t), v); } &&
    !requires(L& l, tensor<typename L::value_type, typename L::device_type>&& t,
              const tensor_view<typename L::value_type, typename L::device_type>& v) { l.forward(v, std::move(t)); };

template <class Block>
    requires conditioned_layer<Block>
struct conditioned_stack {
    using value_type = typename Block::value_type;
    using device_type = typename Block::device_type;
    using tensor_type = tensor<value_type, device_type>;
    using view_type = tensor_view<value_type, device_type>;

    std::vector<Block> blocks;

    conditioned_stack() = default;
    Block& push_back(Block b) { return blocks.emplace_back(std::move(b)); }
    std::size_t size() const { return blocks.size(); }
    Block& operator[](std::size_t i) { return blocks.at(i); }

    tensor_type forward(tensor_type&&, const view_type&) = delete;  // inputs must outlive backward
    tensor_type forward(const view_type&, tensor_type&&) = delete;
    /// x (B, N, D), c (B, D) → (B, N, D); an empty stack returns a copy of x.
    tensor_type forward(const view_type& x, const view_type& c) {
        outputs_.clear();
        if (blocks.empty()) return tensor_type::copy_of(x);
        if (!grad_enabled()) {  // nothing kept for backward: each block's output dies after the next block
            auto h = blocks.front().forward(x, c);
            for (std::size_t i = 1; i < blocks.size(); ++i) h = blocks[i].forward(h, c);
            return h;
        }
        outputs_.reserve(blocks.size());
        for (std::size_t i = 0; i + 1 < blocks.size(); ++i) outputs_.push_back(blocks[i].forward(i ? outputs_.back().view() : x, c));
        return blocks.back().forward(blocks.size() > 1 ? outputs_.back().view() : x, c);
    }

    /// dy (B, N, D) → dx; every block adds its share into dc (B, D).
    tensor_type backward(const view_type& dy, tensor_type& dc) {
        if (blocks.empty()) return tensor_type::copy_of(dy);
        auto d = blocks.back().backward(dy, dc);
        announce_final_gradients(blocks.back());
        for (std::size_t i = blocks.size() - 1; i-- > 0;) {
            d = blocks[i].backward(d, dc);
            announce_final_gradients(blocks[i]);
            if (backward_releases()) outputs_.pop_back();  // block i's output: it and its reader have run backward
        }
        return d;
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        for (std::size_t i = 0; i < blocks.size(); ++i) blocks[i].for_each_parameter(f, join_name(prefix, std::to_string(i)));
    }

private:
    std::vector<tensor_type> outputs_;  // outputs of blocks 0 … n−2, the inputs their successors keep views of
};

} // namespace vediff::nn
