#pragma once
// tensor_view: a non-owning, contiguous, row-major window onto device memory.
// tensor: the owning, move-only tensor; it *is* a view of its own storage, so every op written
// for `const tensor_view<T, D>&` accepts tensors too.
#include <cstdint>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/device.hpp"
#include "vediff/core/error.hpp"
#include "vediff/core/shape.hpp"

namespace vediff {

template <class T, device Device = cpu>
class tensor_view {
public:
    using value_type = T;
    using device_type = Device;

    tensor_view() = default;
    tensor_view(T* data, tensor_shape shape) : data_(data), shape_(shape) {}

    T* data() const { return data_; }
    const tensor_shape& shape() const { return shape_; }
    int rank() const { return shape_.rank(); }
    std::int64_t dim(int axis) const { return shape_[axis]; }
    std::int64_t numel() const { return shape_.numel(); }
    std::array<std::int64_t, max_rank> strides() const { return shape_.strides(); }
    bool empty() const { return numel() == 0; }
    /// False for a default-constructed (or moved-from) tensor, which has no storage.
    bool defined() const { return data_ != nullptr; }

    /// The same memory seen with another shape; one extent may be -1 (inferred).
    tensor_view reshape(std::initializer_list<std::int64_t> dims) const { return {data_, resolve_reshape(dims)}; }
    tensor_view reshape(const tensor_shape& shape) const { return {data_, checked_reshape(shape)}; }

    /// Rows [begin, end) of the first axis, without copying.
    tensor_view slice(std::int64_t begin, std::int64_t end) const {
        if (rank() == 0 || begin < 0 || end < begin || end > shape_[0])
            throw shape_error(fmt::format("slice: rows [{}, {}) out of range for shape {}", begin, end, shape_));
        tensor_shape s = shape_;
        s[0] = end - begin;
        return {data_ + begin * shape_.prod(1, rank()), s};
    }
    /// Row i of the first axis, with that axis dropped.
    tensor_view operator[](std::int64_t i) const {
        if (rank() == 0 || i < 0 || i >= shape_[0])
            throw shape_error(fmt::format("index: row {} out of range for shape {}", i, shape_));
        return {data_ + i * shape_.prod(1, rank()), shape_.drop_front()};
    }

    /// Element access on host devices: t.at(n, c, h, w).
    template <class... I>
        requires(Device::host_accessible && (std::is_integral_v<I> && ...))
    T& at(I... index) const {
        if (static_cast<int>(sizeof...(I)) != rank())
            throw shape_error(fmt::format("at: {} indices for a tensor of shape {}", sizeof...(I), shape_));
        const std::int64_t idx[] = {static_cast<std::int64_t>(index)...};
        const auto st = strides();
        std::int64_t off = 0;
        for (int a = 0; a < rank(); ++a) {
            if (idx[a] < 0 || idx[a] >= shape_[a])
                throw shape_error(fmt::format("at: index {} out of range on axis {} of shape {}", idx[a], a, shape_));
            off += idx[a] * st[static_cast<std::size_t>(a)];
        }
        return data_[off];
    }

    /// Host span of the elements (host devices only).
    std::span<T> span() const
        requires Device::host_accessible
    {
        return {data_, static_cast<std::size_t>(numel())};
    }

    /// Copies the elements to a host vector (any device).
    std::vector<std::remove_const_t<T>> to_vector() const {
        std::vector<std::remove_const_t<T>> v(static_cast<std::size_t>(numel()));
        memory<Device>::copy_to_host(v.data(), data_, v.size() * sizeof(T));
        return v;
    }

protected:
    tensor_shape resolve_reshape(std::initializer_list<std::int64_t> dims) const {
        tensor_shape s;
        int inferred = -1;
        std::int64_t known = 1;
        for (auto d : dims) {
            if (d == -1) {
                if (inferred >= 0) throw shape_error(fmt::format("reshape: more than one -1 in the target of {}", shape_));
                inferred = s.rank();
                s.push_back(0);
            } else {
                s.push_back(d);
                known *= d;
            }
        }
        if (inferred >= 0) {
            if (known == 0 || numel() % known != 0)
                throw shape_error(fmt::format("reshape: cannot infer -1 for {} elements of shape {}", numel(), shape_));
            s[inferred] = numel() / known;
        }
        return checked_reshape(s);
    }
    tensor_shape checked_reshape(const tensor_shape& s) const {
        if (s.numel() != numel())
            throw shape_error(fmt::format("reshape: shape {} has {} elements, target {} has {}", shape_, numel(), s, s.numel()));
        return s;
    }

    T* data_ = nullptr;
    tensor_shape shape_;
};

template <class T, device Device = cpu>
class tensor : public tensor_view<T, Device> {
    using view_type = tensor_view<T, Device>;
    static_assert(std::is_trivially_copyable_v<T>, "tensor elements must be trivially copyable");

public:
    tensor() = default;
    /// Uninitialized storage of the given shape.
    explicit tensor(tensor_shape shape) : view_type(nullptr, shape) {
        this->data_ = static_cast<T*>(memory<Device>::allocate(bytes()));
    }
    ~tensor() { memory<Device>::release(this->data_, bytes()); }

    tensor(const tensor&) = delete;
    tensor& operator=(const tensor&) = delete;
    tensor(tensor&& other) noexcept : view_type(std::exchange(other.data_, nullptr), std::exchange(other.shape_, {})) {}
    tensor& operator=(tensor&& other) noexcept {
        if (this != &other) {
            memory<Device>::release(this->data_, bytes());
            this->data_ = std::exchange(other.data_, nullptr);
            this->shape_ = std::exchange(other.shape_, {});
        }
        return *this;
    }

    static tensor empty(tensor_shape shape) { return tensor(shape); }
    static tensor zeros(tensor_shape shape) { return full(shape, T(0)); }
    static tensor full(tensor_shape shape, T value) {
        tensor t(shape);
        memory<Device>::fill(t.data(), t.numel(), value);
        return t;
    }
    /// A tensor holding a copy of host values; throws shape_error when the count differs.
    static tensor from_host(tensor_shape shape, std::span<const T> values) {
        if (static_cast<std::int64_t>(values.size()) != shape.numel())
            throw shape_error(fmt::format("from_host: {} values for shape {} ({} elements)", values.size(), shape, shape.numel()));
        tensor t(shape);
        memory<Device>::copy_from_host(t.data(), values.data(), t.bytes());
        return t;
    }
    static tensor from_host(tensor_shape shape, std::initializer_list<T> values) {
        return from_host(shape, std::span<const T>(values.begin(), values.size()));
    }
    /// An owning copy of any view of the same device.
    static tensor copy_of(const view_type& v) {
        tensor t(v.shape());
        memory<Device>::copy(t.data(), v.data(), t.bytes());
        return t;
    }

    tensor clone() const { return copy_of(*this); }
    view_type view() const { return *this; }

    /// Reshape without copying: a view of an lvalue, the same storage moved out of an rvalue.
    view_type reshape(std::initializer_list<std::int64_t> dims) const& { return view_type::reshape(dims); }
    view_type reshape(const tensor_shape& s) const& { return view_type::reshape(s); }
    tensor reshape(std::initializer_list<std::int64_t> dims) && {
        auto s = this->resolve_reshape(dims);
        return std::move(*this).reshape_to(s);
    }
    tensor reshape(const tensor_shape& s) && { return std::move(*this).reshape_to(this->checked_reshape(s)); }

    std::size_t bytes() const { return static_cast<std::size_t>(this->numel()) * sizeof(T); }

private:
    tensor reshape_to(const tensor_shape& s) && {
        tensor t(std::move(*this));
        t.shape_ = s;
        return t;
    }
};

/// Throws shape_error naming the op and both shapes unless a and b have the same shape.
template <class A, class B>
void require_same_shape(const char* op, const A& a, const B& b) {
    if (!(a.shape() == b.shape()))
        throw shape_error(fmt::format("{}: shapes {} and {} differ", op, a.shape(), b.shape()));
}

/// Throws shape_error naming the op unless t has the given rank.
template <class A>
void require_rank(const char* op, const A& t, int rank, const char* what = "input") {
    if (t.rank() != rank)
        throw shape_error(fmt::format("{}: {} must have rank {}, got shape {}", op, what, rank, t.shape()));
}

} // namespace vediff
