#pragma once
// The property the initialization keys exist for: no two randomly initialized parameters of a
// model hold the same values.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "vediff/nn/layer.hpp"

namespace vediff::testing {

/// Pairs of names of randomly drawn parameters (uniform or normal rule) whose values are equal.
template <class L>
std::vector<std::pair<std::string, std::string>> equal_random_parameters(L& model) {
    using T = typename L::value_type;
    std::map<std::vector<T>, std::string> seen;
    std::vector<std::pair<std::string, std::string>> equal;
    model.for_each_parameter([&](const std::string& name, auto& p) {
        const auto kind = p.init.kind;
        if (kind != nn::init_rule::distribution::uniform && kind != nn::init_rule::distribution::normal) return;
        auto [it, inserted] = seen.emplace(p.value.to_vector(), name);
        if (!inserted) equal.emplace_back(it->second, name);
    }, std::string{});
    return equal;
}

/// The number of randomly drawn parameters of a model.
template <class L>
int random_parameter_count(L& model) {
    int n = 0;
    model.for_each_parameter([&](const std::string&, auto& p) {
        n += p.init.kind == nn::init_rule::distribution::uniform || p.init.kind == nn::init_rule::distribution::normal;
    }, std::string{});
    return n;
}

} // namespace vediff::testing
