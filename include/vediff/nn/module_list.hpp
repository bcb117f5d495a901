#pragma once
// nn::module_list<L>: a runtime-length list of layers of one type, named "0", "1", ... in
// parameter names, as PyTorch's nn.ModuleList. Like nn.ModuleList it has no forward: the model
// that owns it decides how its items are wired (LDM's `down.{i}.block.{j}` lists are).
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "vediff/nn/layer.hpp"

namespace vediff::nn {

template <class Layer>
struct module_list {
    using value_type = typename Layer::value_type;
    using device_type = typename Layer::device_type;

    std::vector<Layer> items;

    module_list() = default;

    Layer& push_back(Layer layer) { return items.emplace_back(std::move(layer)); }

    std::size_t size() const { return items.size(); }
    bool empty() const { return items.empty(); }

    /// Item i; throws std::out_of_range naming the index and the length.
    Layer& operator[](std::size_t i) { return items.at(checked(i)); }
    const Layer& operator[](std::size_t i) const { return items.at(checked(i)); }

    auto begin() { return items.begin(); }
    auto end() { return items.end(); }
    auto begin() const { return items.begin(); }
    auto end() const { return items.end(); }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        for (std::size_t i = 0; i < items.size(); ++i) items[i].for_each_parameter(f, join_name(prefix, std::to_string(i)));
    }

    void train(bool training) {
        for (auto& l : items) set_training(l, training);
    }

private:
    std::size_t checked(std::size_t i) const {
        if (i >= items.size()) throw std::out_of_range(fmt::format("module_list: index {} out of range for {} items", i, items.size()));
        return i;
    }
};

} // namespace vediff::nn
