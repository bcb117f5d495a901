#pragma once
// The property data parallelism's overlap relies on (nn/gradient_listener.hpp): during backward,
// every trainable parameter of a model is announced final exactly once, and its gradient at the
// announcement is the gradient backward ends with.
#include <map>
#include <string>
#include <vector>

#include "vediff/nn/gradient_listener.hpp"
#include "vediff/nn/layer.hpp"

namespace vediff::testing {

/// Records, for each announced parameter, its gradient at the moment of the announcement.
template <class T, class D>
struct announcement_recorder final : nn::gradient_listener {
    std::map<const void*, std::vector<std::vector<T>>> snapshots;  // one per announcement
    int layers = 0;
    void gradient_final(const void* p) override {
        snapshots[p].push_back(static_cast<const nn::parameter<T, D>*>(p)->grad.to_vector());
    }
    void layer_done() override { ++layers; }
};

/// What is wrong with the announcements of a backward that has returned: a parameter never
/// announced or announced twice, or one whose gradient changed after its announcement. Empty
/// when none.
template <class Model, class T, class D>
std::vector<std::string> announcement_problems(Model& model, const announcement_recorder<T, D>& recorder) {
    std::vector<std::string> problems;
    std::size_t trainable = 0;
    model.for_each_parameter([&](const std::string& name, nn::parameter<T, D>& p) {
        if (!p.trainable) {
            if (recorder.snapshots.count(&p)) problems.push_back(name + ": fixed, yet announced");
            return;
        }
        ++trainable;
        const auto it = recorder.snapshots.find(&p);
        if (it == recorder.snapshots.end()) problems.push_back(name + ": never announced");
        else if (it->second.size() != 1) problems.push_back(name + ": announced " + std::to_string(it->second.size()) + " times");
        else if (it->second.front() != p.grad.to_vector()) problems.push_back(name + ": its gradient changed after the announcement");
    }, std::string{});
    if (recorder.snapshots.size() != trainable) problems.push_back("announcements of parameters that are not the model's");
    return problems;
}

} // namespace vediff::testing
