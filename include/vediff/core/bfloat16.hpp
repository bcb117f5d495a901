#pragma once
// bfloat16: the upper 16 bits of an IEEE binary32 (8 exponent bits, 7 stored mantissa bits), the
// operand type of mixed-precision products (core/precision.hpp) and a storage dtype of
// safetensors ("BF16"). Conversion from float rounds to nearest, ties to even (as PyTorch's
// c10::BFloat16 and CUDA's __float2bfloat16_rn do), never truncates; NaN stays a (quiet) NaN and
// ±Inf stays ±Inf; subnormals round like any other value. Usable in host and device code.
#include <bit>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define VEDIFF_HOST_DEVICE __host__ __device__
#else
#define VEDIFF_HOST_DEVICE
#endif

namespace vediff {

namespace bfloat16_detail {

VEDIFF_HOST_DEVICE inline std::uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    std::uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
#endif
}

VEDIFF_HOST_DEVICE inline float bits_float(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
#endif
}

/// The bfloat16 bits nearest to f, ties to even. Adding 0x7FFF plus the lowest kept bit to the
/// binary32 bits carries into the kept half exactly when the dropped half is above one half, or
/// equal to it with an odd kept half; an overflow of the largest finite values carries into the
/// exponent and gives Inf, as rounding must. NaN is kept a quiet NaN of the same sign (its
/// payload's top bits), since the carry could otherwise turn a NaN into Inf.
VEDIFF_HOST_DEVICE constexpr std::uint16_t round_bits(std::uint32_t u) {
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
    return static_cast<std::uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

} // namespace bfloat16_detail

struct bfloat16 {
    std::uint16_t bits = 0;

    bfloat16() = default;
    VEDIFF_HOST_DEVICE explicit bfloat16(float f) : bits(bfloat16_detail::round_bits(bfloat16_detail::float_bits(f))) {}
    VEDIFF_HOST_DEVICE explicit bfloat16(double d) : bfloat16(static_cast<float>(d)) {}

    /// The value with these bits (no rounding).
    VEDIFF_HOST_DEVICE static constexpr bfloat16 from_bits(std::uint16_t b) {
        bfloat16 r;
        r.bits = b;
        return r;
    }

    /// Exact: every bfloat16 is a float.
    VEDIFF_HOST_DEVICE explicit operator float() const { return bfloat16_detail::bits_float(std::uint32_t{bits} << 16); }
    VEDIFF_HOST_DEVICE explicit operator double() const { return static_cast<double>(static_cast<float>(*this)); }

    VEDIFF_HOST_DEVICE friend bool operator==(bfloat16 a, bfloat16 b) { return static_cast<float>(a) == static_cast<float>(b); }
};

static_assert(sizeof(bfloat16) == 2 && alignof(bfloat16) == 2, "bfloat16 must be two bytes, as safetensors' BF16");

/// Unit roundoff of bfloat16 rounding to nearest: 2^−8 (7 stored mantissa bits plus the implicit one).
inline constexpr double bfloat16_unit_roundoff = 1.0 / 256.0;

/// dst[i] = bfloat16(src[i]) for n values (host memory).
inline void round_to_bfloat16(bfloat16* dst, const float* src, std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i) dst[i] = bfloat16(src[i]);
}

/// dst[i] = float(src[i]) for n values (host memory).
inline void widen_from_bfloat16(float* dst, const bfloat16* src, std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

} // namespace vediff
