#pragma once
// `--device cpu|cuda` for every job. The device is a template parameter everywhere in vediff, so a
// program chooses at compile time which devices it can run on (device_list<cpu>, or
// device_list<cpu, cuda> in a .cu program that includes backend/cuda.hpp) and the flag picks one
// of them at run time: with_device calls the job's body instantiated for that device.
#include <cstddef>
#include <stdexcept>
#include <string>

#include <cxxopts.hpp>
#include <fmt/format.h>

#include "vediff/core/device.hpp"
#include "vediff/jobs/flag_checks.hpp"

namespace vediff::jobs {

/// The devices a program was compiled for; the first is the default of --device.
template <device... Devices>
struct device_list {
    static_assert(sizeof...(Devices) > 0, "a program runs on at least one device");
    static std::string names(const char* separator = " | ") {
        std::string s;
        ((s += (s.empty() ? "" : separator), s += Devices::name), ...);
        return s;
    }
    static bool contains(const std::string& name) { return ((name == Devices::name) || ...); }
};

/// A program built by a C++ compiler alone runs on the cpu.
using cpu_only = device_list<cpu>;

namespace device_detail {

template <class F, device First, device... Rest>
decltype(auto) dispatch(const std::string& name, F& f, device_list<First, Rest...>) {
    if (name == First::name) {
        // A device that can be absent at run time (a GPU) says so before the job starts.
        try {
            device_check<First>::require_available();
        } catch (const std::exception& e) {
            throw usage_error(fmt::format("--device {}: {}", name, e.what()));
        }
        return f.template operator()<First>();
    }
    if constexpr (sizeof...(Rest) > 0) return dispatch(name, f, device_list<Rest...>{});
    else throw std::logic_error("device dispatch: checked name not found");
}

} // namespace device_detail

/// Throws std::invalid_argument naming the flag unless `name` is one of Devices.
template <class Devices>
void require_device(const std::string& name) {
    if (Devices::contains(name)) return;
    if (name == cuda::name)
        throw std::invalid_argument("--device cuda: this program was built without the cuda backend (build it where CMake finds "
                                    "nvcc, with -DVEDIFF_WITH_CUDA=ON)");
    throw usage_error(fmt::format("--device {}: expected {}", name, Devices::names(" or ")));
}

/// f.template operator()<D>() for the device D named `name` (one of Devices).
template <class Devices, class F>
decltype(auto) with_device(const std::string& name, F&& f) {
    require_device<Devices>(name);
    return device_detail::dispatch(name, f, Devices{});
}

/// Adds --device to a job's options, listing the devices this program was built for.
template <class Devices>
void add_device_option(cxxopts::Options& options, const std::string& group = "") {
    options.add_options(group)("device", fmt::format("where to compute: {}", Devices::names()),
                               cxxopts::value<std::string>()->default_value("cpu"));
}

/// The --device flag's value, checked against Devices.
template <class Devices>
std::string read_device(const cxxopts::ParseResult& parsed) {
    auto name = parsed["device"].as<std::string>();
    require_device<Devices>(name);
    return name;
}

} // namespace vediff::jobs
