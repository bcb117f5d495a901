#pragma once
// Explicit transfers between devices: to<cuda>(t) and to<cpu>(t). Nothing in vediff moves a
// tensor between devices implicitly, so a transfer in a hot loop is always visible in the code.
#include <cstddef>
#include <type_traits>
#include <vector>

#include "vediff/core/device.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff {

/// A copy of x on device To (on x's own device: a clone). cpu ↔ another device is one copy by
/// that device's memory<>; between two non-host devices the copy goes through host memory.
/// The memory<> of both devices must be visible: include their backend headers.
template <device To, class T, device From>
tensor<T, To> to(const tensor_view<T, From>& x) {
    tensor<T, To> out(x.shape());
    const std::size_t bytes = static_cast<std::size_t>(x.numel()) * sizeof(T);
    if constexpr (std::is_same_v<To, From>) {
        memory<To>::copy(out.data(), x.data(), bytes);
    } else if constexpr (From::host_accessible) {
        memory<To>::copy_from_host(out.data(), x.data(), bytes);
    } else if constexpr (To::host_accessible) {
        memory<From>::copy_to_host(out.data(), x.data(), bytes);
    } else {
        std::vector<T> host(static_cast<std::size_t>(x.numel()));
        memory<From>::copy_to_host(host.data(), x.data(), bytes);
        memory<To>::copy_from_host(out.data(), host.data(), bytes);
    }
    return out;
}

} // namespace vediff

namespace vediff {

/// x seen on device To: x itself when it already lives there (no copy: the cpu path of a
/// device-generic job stays copy-free), otherwise a copy this object owns. Keep it alive while
/// its view is used; it neither copies nor moves, so the view cannot dangle.
template <class T, device To>
class view_on {
public:
    template <device From>
    explicit view_on(const tensor_view<T, From>& x) {
        if constexpr (std::is_same_v<From, To>) {
            view_ = x;
        } else {
            copy_ = to<To>(x);
            view_ = copy_.view();
        }
    }
    /// Not of a temporary tensor: on its own device the view would outlive the storage.
    template <device From>
    view_on(tensor<T, From>&&) = delete;
    view_on(const view_on&) = delete;
    view_on& operator=(const view_on&) = delete;

    const tensor_view<T, To>& view() const { return view_; }
    operator const tensor_view<T, To>&() const { return view_; }

private:
    tensor<T, To> copy_;
    tensor_view<T, To> view_;
};

} // namespace vediff
