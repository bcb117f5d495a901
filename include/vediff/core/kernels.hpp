#pragma once
// The op families a device backend implements: one struct of kernels per family, declared here
// for every device and specialized by backend/<device>/<family>.hpp. ops/ headers include only
// this file, so a translation unit sees a backend only through that backend's one header
// (vediff/backend/cpu.hpp), and a missing kernel of a device is a compile error.
// The plain structs of the kernels' signatures live here too: they describe what a backend is
// handed, not how it computes.
#include <cstdint>

#include "vediff/core/bfloat16.hpp"
#include "vediff/core/device.hpp"

namespace vediff {

template <device D> struct activation_kernels;
template <device D> struct attention_kernels;
template <device D> struct channel_norm_kernels;  // LPIPS (models/lpips.hpp)
template <device D> struct batch_norm_kernels;    // the FID Inception (eval) and the PatchGAN discriminator
template <device D> struct broadcast_kernels;
template <device D> struct concat_kernels;
template <device D> struct conv_kernels;
template <device D> struct cross_entropy_kernels;
template <device D> struct elementwise_kernels;
template <device D> struct embedding_kernels;
template <device D> struct gemm_kernels;
template <device D> struct loss_kernels;
template <device D> struct norm_kernels;
template <device D> struct optim_kernels;
template <device D> struct patchify_kernels;
template <device D> struct pool_kernels;        // the FID Inception and LPIPS
template <device D> struct positional_kernels;
template <device D> struct posterior_kernels;
template <device D> struct random_kernels;
template <device D> struct reduce_kernels;
template <device D> struct resize_kernels;      // cpu only: the frozen FID Inception (models/inception.hpp)
template <device D> struct softmax_kernels;
template <device D> struct upsample_kernels;

/// Where one attention operand's (batch, head) matrix starts and how its rows are spaced, in elements.
struct attention_operand {
    std::int64_t batch_stride = 0;
    std::int64_t head_stride = 0;
    std::int64_t outer_stride = 0;  // between tokens (tokens-major) or between features (channels-first)
};

/// Sizes of an attention call and the strides of q, k, v and the output (the gradients share them).
struct attention_layout {
    std::int64_t batch = 0, heads = 0, queries = 0, keys = 0, key_dim = 0, value_dim = 0;
    attention_operand q, k, v, out;
};

/// Sizes of one 2-D pooling call over planes of (H, W): a square window, one stride for both axes,
/// the same padding on every side (PyTorch's max_pool2d / avg_pool2d with ceil_mode=False).
struct pool2d_geometry {
    std::int64_t planes = 0, in_h = 0, in_w = 0, out_h = 0, out_w = 0;
    std::int64_t kernel = 1, stride = 1, padding = 0;
};

/// The scalars of one AdamW step, computed once per step in double (as torch.optim.AdamW does in
/// Python) and rounded to the element type inside the kernel.
/// One tensor of a multi-tensor AdamW update: parameter, moments, gradient, n elements each.
template <class T>
struct adamw_tensor {
    T *param, *exp_avg, *exp_avg_sq;
    const T* grad;
    std::int64_t n;
};

/// One tensor of a multi-tensor EMA update: shadow += weight·(param − shadow).
template <class T>
struct ema_tensor {
    T* shadow;
    const T* param;
    std::int64_t n;
};

struct adamw_scalars {
    double decay_factor = 1;           // 1 − lr·weight_decay
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double step_size = 0;              // lr / (1 − β1^t)
    double bias_correction2_sqrt = 1;  // √(1 − β2^t)
};

/// The factor torch.nn.utils.clip_grad_norm_ scales gradients by, given their total L2 norm:
/// max_norm / (norm + 1e-6) where that is below 1; 1 (left alone) otherwise and for a non-finite
/// norm. Shared by the backends, so that the cuda device computes it where the norm is.
VEDIFF_HOST_DEVICE inline double clip_factor(double norm, double max_norm) {
    if (!(norm - norm == 0.0)) return 1.0;  // inf or NaN (no <cmath> in device code)
    const double factor = max_norm / (norm + 1e-6);
    return factor < 1.0 ? factor : 1.0;
}

} // namespace vediff
