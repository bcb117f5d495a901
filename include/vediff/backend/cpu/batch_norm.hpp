#pragma once
// cpu kernel folding an evaluation-mode batch norm into a per-channel affine map (ops/batch_norm.hpp).
#include <cmath>
#include <cstdint>

#include "vediff/core/kernels.hpp"

namespace vediff {

template <>
struct batch_norm_kernels<cpu> {
    /// scale = weight / √(var + eps), shift = bias − mean·scale, in double; returns the first
    /// channel whose var + eps is not a positive number or whose values are not finite, else −1.
    template <class T>
    static std::int64_t fold(T* scale, T* shift, const T* weight, const T* bias, const T* mean, const T* var, double eps,
                             std::int64_t channels) {
        for (std::int64_t c = 0; c < channels; ++c) {
            const double denominator = double(var[c]) + eps;
            if (!(denominator > 0) || !std::isfinite(denominator) || !std::isfinite(double(weight[c])) ||
                !std::isfinite(double(bias[c])) || !std::isfinite(double(mean[c])))
                return c;
            const double s = double(weight[c]) / std::sqrt(denominator);
            scale[c] = static_cast<T>(s);
            shift[c] = static_cast<T>(double(bias[c]) - double(mean[c]) * s);
        }
        return -1;
    }
};

} // namespace vediff
