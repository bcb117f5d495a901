#pragma once
// tensor_shape: the extents of a row-major tensor of rank 0..5, with derived strides.
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include <fmt/format.h>

#include "vediff/core/error.hpp"

namespace vediff {

inline constexpr int max_rank = 5;

class tensor_shape {
public:
    constexpr tensor_shape() = default;
    constexpr tensor_shape(std::initializer_list<std::int64_t> dims) {
        if (dims.size() > max_rank)
            throw shape_error(fmt::format("tensor_shape: rank {} exceeds the maximum rank {}", dims.size(), max_rank));
        for (auto d : dims) push_back(d);
    }
    template <class It>
    constexpr tensor_shape(It first, It last) {
        for (; first != last; ++first) push_back(static_cast<std::int64_t>(*first));
    }

    constexpr int rank() const { return rank_; }
    constexpr std::int64_t operator[](int axis) const { return dims_[static_cast<std::size_t>(normalize_axis(axis))]; }
    constexpr std::int64_t& operator[](int axis) { return dims_[static_cast<std::size_t>(normalize_axis(axis))]; }
    constexpr const std::int64_t* begin() const { return dims_.data(); }
    constexpr const std::int64_t* end() const { return dims_.data() + rank_; }

    constexpr std::int64_t numel() const {
        std::int64_t n = 1;
        for (int i = 0; i < rank_; ++i) n *= dims_[static_cast<std::size_t>(i)];
        return n;
    }
    /// Row-major strides in elements.
    constexpr std::array<std::int64_t, max_rank> strides() const {
        std::array<std::int64_t, max_rank> s{};
        std::int64_t step = 1;
        for (int i = rank_ - 1; i >= 0; --i) {
            s[static_cast<std::size_t>(i)] = step;
            step *= dims_[static_cast<std::size_t>(i)];
        }
        return s;
    }
    /// Axis index with Python-style negatives resolved; throws shape_error when out of range.
    constexpr int normalize_axis(int axis) const {
        int a = axis < 0 ? axis + rank_ : axis;
        if (a < 0 || a >= rank_)
            throw shape_error(fmt::format("axis {} is out of range for a tensor of rank {}", axis, rank_));
        return a;
    }
    constexpr void push_back(std::int64_t d) {
        if (rank_ >= max_rank)
            throw shape_error(fmt::format("tensor_shape: rank exceeds the maximum rank {}", max_rank));
        if (d < 0) throw shape_error(fmt::format("tensor_shape: negative extent {}", d));
        dims_[static_cast<std::size_t>(rank_++)] = d;
    }
    /// The shape without its first axis.
    constexpr tensor_shape drop_front() const {
        tensor_shape s;
        for (int i = 1; i < rank_; ++i) s.push_back(dims_[static_cast<std::size_t>(i)]);
        return s;
    }
    /// Product of the extents in [first, last).
    constexpr std::int64_t prod(int first, int last) const {
        std::int64_t n = 1;
        for (int i = first; i < last; ++i) n *= dims_[static_cast<std::size_t>(i)];
        return n;
    }

    friend constexpr bool operator==(const tensor_shape& a, const tensor_shape& b) {
        if (a.rank_ != b.rank_) return false;
        for (int i = 0; i < a.rank_; ++i)
            if (a.dims_[static_cast<std::size_t>(i)] != b.dims_[static_cast<std::size_t>(i)]) return false;
        return true;
    }

    std::string to_string() const {
        std::string s = "(";
        for (int i = 0; i < rank_; ++i) s += (i ? ", " : "") + std::to_string(dims_[static_cast<std::size_t>(i)]);
        return s + ")";
    }

private:
    std::array<std::int64_t, max_rank> dims_{};
    int rank_ = 0;
};

} // namespace vediff

template <>
struct fmt::formatter<vediff::tensor_shape> : fmt::formatter<std::string> {
    template <class Ctx>
    auto format(const vediff::tensor_shape& s, Ctx& ctx) const {
        return fmt::formatter<std::string>::format(s.to_string(), ctx);
    }
};
