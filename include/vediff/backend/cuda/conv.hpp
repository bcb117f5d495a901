#pragma once
// cuda kernels for 2-D convolution. Each call takes one of three paths (choose_conv_path):
//  * pointwise GEMM: a 1×1, stride-1, unpadded conv is y[n] = W·x[n], so forward and backward are
//    strided-batched cuBLAS products over the whole batch, with no im2col; every precision.
//  * cuDNN: every other fp32 or double conv, through cuDNN's legacy API (cudnnConvolution*,
//    algorithms from the _v7 heuristics, cached per geometry; workspace from vediff's caching
//    allocator; TF32 as set_cuda_conv_tf32). Among the heuristics' usable algorithms the first
//    deterministic one is taken, so that a training step repeats exactly, as it does on the cpu.
//    cuDNN pads both sides of an axis alike: an asymmetric geometry (LDM's stride-2 Downsample pads
//    (0, 1, 0, 1)) gives cuDNN the smaller side and pads the excess into a zero-bordered copy of x,
//    as PyTorch's model does with F.pad. That copy costs about one input's memory and one pass,
//    against im2col's column buffer and 3N launches, and keeps one fp32 algorithm for all geometries.
//  * im2col + cuBLAS, one image at a time (the column buffer stays one image's size; col2im is a
//    gather, so deterministic): bf16_mixed's non-pointwise convs, because cuDNN's legacy API takes
//    bf16 x and w only with a bf16 y (its PSEUDO_BFLOAT16 configuration), while bf16_mixed rounds the
//    operands alone and keeps fp32 outputs, as on the cpu; also sizes cuDNN's descriptors reject
//    (an empty dimension, a tensor of 2^31 elements or more).
// The bias gradient is cudnnConvolutionBackwardBias on the first two paths (fp32 sums of dy under
// every policy, as on the cpu).
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include <fmt/format.h>

#include "vediff/backend/cuda/gemm.hpp"
#include "vediff/backend/cuda/layout.hpp"
#include "vediff/backend/cuda/memory.hpp"
#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/conv2d_geometry.hpp"
#include "vediff/core/kernels.hpp"
#include "vediff/core/precision.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff {

namespace cuda_detail {

// ---- Which path ------------------------------------------------------------------------------

enum class conv_path { pointwise_gemm, cudnn, im2col };

/// The geometry in words, for errors: "x (N, C, H, W) * weight (O, C, kh, kw), stride (sh, sw),
/// padding (top, bottom, left, right)".
inline std::string describe(const conv2d_geometry& g) {
    return fmt::format("x ({}, {}, {}, {}) * weight ({}, {}, {}, {}), stride ({}, {}), padding ({}, {}, {}, {})", g.batch,
                       g.in_channels, g.in_h, g.in_w, g.out_channels, g.in_channels, g.kernel_h, g.kernel_w, g.stride_h,
                       g.stride_w, g.pad_top, g.pad_bottom, g.pad_left, g.pad_right);
}

/// Padding cuDNN cannot express, done by copying x into planes with a zero border: each of N·C
/// planes of h × w goes to (h + top + bottom) × (w + left + right) at (top, left).
struct explicit_padding {
    std::int64_t h = 0, w = 0, top = 0, bottom = 0, left = 0, right = 0;
    __host__ __device__ std::int64_t padded_h() const { return h + top + bottom; }
    __host__ __device__ std::int64_t padded_w() const { return w + left + right; }
    __host__ __device__ bool any() const { return top || bottom || left || right; }
};

/// What cuDNN is asked for one geometry: a symmetric padding per axis (the smaller of the two
/// sides) and an input of in_h × in_w, x after the explicit padding of the excess. Batch, channels,
/// kernel, stride and output are the geometry's.
struct cudnn_conv_problem {
    std::int64_t pad_h = 0, pad_w = 0;
    explicit_padding extra;
    std::int64_t in_h = 0, in_w = 0;
    bool pads_explicitly() const { return extra.any(); }
};

inline cudnn_conv_problem cudnn_problem(const conv2d_geometry& g) {
    cudnn_conv_problem p;
    p.pad_h = std::min(g.pad_top, g.pad_bottom);
    p.pad_w = std::min(g.pad_left, g.pad_right);
    p.extra = {g.in_h, g.in_w, g.pad_top - p.pad_h, g.pad_bottom - p.pad_h, g.pad_left - p.pad_w, g.pad_right - p.pad_w};
    p.in_h = p.extra.padded_h();
    p.in_w = p.extra.padded_w();
    return p;
}

/// Whether x (as padded for cuDNN), y and w each have fewer than 2^31 elements: cuDNN's 4-D
/// descriptors take int sizes and strides.
inline bool fits_cudnn_descriptors(const conv2d_geometry& g) {
    const cudnn_conv_problem p = cudnn_problem(g);
    constexpr std::int64_t limit = 0x7fffffff;
    const auto fits = [](std::int64_t a, std::int64_t b, std::int64_t c, std::int64_t d) {
        // Left to right, each partial product checked before it can overflow.
        std::int64_t n = 1;
        for (const std::int64_t v : {a, b, c, d}) {
            if (v > limit || (v > 0 && n > limit / v)) return false;
            n *= v;
        }
        return true;
    };
    return fits(g.batch, g.in_channels, p.in_h, p.in_w) && fits(g.batch, g.out_channels, g.out_h, g.out_w) &&
           fits(g.out_channels, g.in_channels, g.kernel_h, g.kernel_w);
}

/// The path of a convolution of geometry g; rounds_operands: P::rounds_operands (bf16_mixed).
inline conv_path choose_conv_path(const conv2d_geometry& g, bool rounds_operands) {
    const bool empty = g.batch <= 0 || g.in_channels <= 0 || g.out_channels <= 0 || g.out_h <= 0 || g.out_w <= 0;
    if (empty || !fits_cudnn_descriptors(g)) return conv_path::im2col;
    if (g.pointwise()) return conv_path::pointwise_gemm;
    if (rounds_operands) return conv_path::im2col;
    return conv_path::cudnn;
}

// ---- Functors (host and device, so that test_cuda_functors runs them on the host) -------------

/// padded (N·C planes of padded_h × padded_w) = x (N·C planes of h × w) with a zero border.
template <class T>
struct pad_planes_op {
    T* padded;
    const T* x;
    explicit_padding p;
    __host__ __device__ void operator()(std::int64_t e) const {
        const std::int64_t pw = p.padded_w(), ph = p.padded_h();
        const std::int64_t xx = index_mod(e, pw) - p.left, y = index_mod(index_div(e, pw), ph) - p.top, plane = index_div(e, pw * ph);
        padded[e] = (y >= 0 && y < p.h && xx >= 0 && xx < p.w) ? x[(plane * p.h + y) * p.w + xx] : T(0);
    }
};

/// x (N·C planes of h × w) = the interior of padded: the adjoint of pad_planes_op, which takes
/// the gradient for the padded copy back to x.
template <class T>
struct crop_planes_op {
    T* x;
    const T* padded;
    explicit_padding p;
    __host__ __device__ void operator()(std::int64_t e) const {
        const std::int64_t xx = index_mod(e, p.w), y = index_mod(index_div(e, p.w), p.h), plane = index_div(e, p.w * p.h);
        x[e] = padded[(plane * p.padded_h() + y + p.top) * p.padded_w() + xx + p.left];
    }
};

/// y (images of channels × plane)[e] = bias[channel of e]
template <class T>
struct channel_rows_op {
    T* y;
    const T* bias;
    std::int64_t plane, channels;
    __host__ __device__ void operator()(std::int64_t e) const { y[e] = bias[index_mod(index_div(e, plane), channels)]; }
};

/// The geometry as plain integers, copied into kernels by value.
struct conv_shape {
    std::int64_t cin, h, w, kh, kw, sh, sw, pt, pl, ho, wo;
    explicit conv_shape(const conv2d_geometry& g)
        : cin(g.in_channels), h(g.in_h), w(g.in_w), kh(g.kernel_h), kw(g.kernel_w), sh(g.stride_h), sw(g.stride_w),
          pt(g.pad_top), pl(g.pad_left), ho(g.out_h), wo(g.out_w) {}
};

/// col (cin·kh·kw, ho·wo)[(c·kh + i)·kw + j, oy·wo + ox] = x (cin, h, w)[c, oy·sh − pt + i, ox·sw − pl + j], 0 outside.
template <class T>
struct im2col_op {
    T* col;
    const T* x;
    conv_shape s;
    __host__ __device__ void operator()(std::int64_t e) const {
        const std::int64_t plane = s.ho * s.wo, row = index_div(e, plane), pos = index_mod(e, plane);
        const std::int64_t j = index_mod(row, s.kw), i = index_mod(index_div(row, s.kw), s.kh), c = index_div(row, s.kw * s.kh);
        const std::int64_t y = index_div(pos, s.wo) * s.sh - s.pt + i, xx = index_mod(pos, s.wo) * s.sw - s.pl + j;
        col[e] = (y >= 0 && y < s.h && xx >= 0 && xx < s.w) ? x[(c * s.h + y) * s.w + xx] : T(0);
    }
};

/// The adjoint of im2col: dx (cin, h, w)[c, y, x] = Σ of the column entries that read it.
template <class T>
struct col2im_op {
    T* dx;
    const T* col;
    conv_shape s;
    __host__ __device__ void operator()(std::int64_t e) const {
        const std::int64_t xx = index_mod(e, s.w), y = index_mod(index_div(e, s.w), s.h), c = index_div(e, s.w * s.h), plane = s.ho * s.wo;
        T sum = 0;
        for (std::int64_t i = 0; i < s.kh; ++i) {
            const std::int64_t ty = y + s.pt - i;
            if (ty < 0 || index_mod(ty, s.sh) != 0 || index_div(ty, s.sh) >= s.ho) continue;
            for (std::int64_t j = 0; j < s.kw; ++j) {
                const std::int64_t tx = xx + s.pl - j;
                if (tx < 0 || index_mod(tx, s.sw) != 0 || index_div(tx, s.sw) >= s.wo) continue;
                sum += col[((c * s.kh + i) * s.kw + j) * plane + index_div(ty, s.sh) * s.wo + index_div(tx, s.sw)];
            }
        }
        dx[e] = sum;
    }
};

// ---- cuDNN: descriptors, algorithm choice and its cache --------------------------------------

template <class T>
inline constexpr cudnnDataType_t cudnn_data_type = std::is_same_v<T, double> ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;

/// cuDNN's alpha and beta: double for double data, float otherwise.
template <class T>
using cudnn_scale = std::conditional_t<std::is_same_v<T, double>, double, float>;

inline int cudnn_int(std::int64_t v, const char* what, const conv2d_geometry& g) {
    if (v < 0 || v > std::int64_t{0x7fffffff})
        throw shape_error(fmt::format("cuDNN conv: {} = {} is beyond cuDNN's 32-bit sizes ({})", what, v, describe(g)));
    return static_cast<int>(v);
}

/// The math cuDNN is allowed for a float conv: CUDNN_TENSOR_OP_MATH lets fp32 data use TF32
/// tensor cores; CUDNN_FMA_MATH keeps to FMA kernels, full fp32. Double: the default (FP64).
inline cudnnMathType_t requested_math(cudnnDataType_t type, bool tf32) {
    if (type != CUDNN_DATA_FLOAT) return CUDNN_DEFAULT_MATH;
    return tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
}

enum class conv_pass { forward, backward_data, backward_filter };

inline const char* pass_name(conv_pass pass) {
    switch (pass) {
    case conv_pass::forward: return "forward";
    case conv_pass::backward_data: return "backward data";
    case conv_pass::backward_filter: return "backward filter";
    }
    return "?";
}

/// What the algorithm choice depends on: every field of the geometry, the data type, whether
/// TF32 is allowed (float only) and the pass.
struct conv_algorithm_key {
    std::array<std::int64_t, 15> geometry{};
    cudnnDataType_t type = CUDNN_DATA_FLOAT;
    bool tf32 = false;
    conv_pass pass = conv_pass::forward;
    // Written out: nvcc 13 leaves a defaulted operator<=>'s implicit operator== undefined at link time.
    auto tied() const { return std::tie(geometry, type, tf32, pass); }
    friend bool operator==(const conv_algorithm_key& a, const conv_algorithm_key& b) { return a.tied() == b.tied(); }
    friend bool operator<(const conv_algorithm_key& a, const conv_algorithm_key& b) { return a.tied() < b.tied(); }
};

inline conv_algorithm_key algorithm_key(const conv2d_geometry& g, cudnnDataType_t type, bool tf32, conv_pass pass) {
    return {{g.batch, g.in_channels, g.in_h, g.in_w, g.out_channels, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_top,
             g.pad_bottom, g.pad_left, g.pad_right, g.out_h, g.out_w},
            type,
            type == CUDNN_DATA_FLOAT && tf32,
            pass};
}

/// An algorithm of one pass (the value of its cudnnConvolution*Algo_t), the math it runs with
/// and the workspace it needs.
struct cudnn_algorithm {
    int algo = 0;
    cudnnMathType_t math = CUDNN_DEFAULT_MATH;
    std::size_t workspace_bytes = 0;
};

/// The most workspace an algorithm may ask for: past it the heuristics' next choice is taken
/// (implicit-GEMM algorithms need little or none, so one is always left).
inline constexpr std::size_t cudnn_workspace_limit_bytes = std::size_t{512} << 20;

/// From the heuristics' results, best first: the first deterministic algorithm that cuDNN
/// supports here (status success) within the workspace limit, else the first such one at all.
/// fma_only (float with TF32 off): it runs with CUDNN_FMA_MATH whatever math type the heuristics
/// evaluated it with, so that TF32 stays off. Throws naming the pass and geometry when none is usable.
template <class Perf>
cudnn_algorithm pick_algorithm(const Perf* results, int count, bool fma_only, std::size_t workspace_limit, conv_pass pass,
                               const conv2d_geometry& g) {
    const Perf* chosen = nullptr;
    for (int i = 0; i < count; ++i) {
        const Perf& r = results[i];
        if (r.status != CUDNN_STATUS_SUCCESS || r.memory > workspace_limit) continue;
        if (r.determinism == CUDNN_DETERMINISTIC) {
            chosen = &r;
            break;
        }
        if (!chosen) chosen = &r;
    }
    if (!chosen)
        throw cuda_error(fmt::format("cuDNN conv: no usable {} algorithm among the {} the heuristics returned (workspace limit {} MiB) for {}",
                                     pass_name(pass), count, workspace_limit >> 20, describe(g)));
    return {static_cast<int>(chosen->algo), fma_only ? CUDNN_FMA_MATH : chosen->mathType, chosen->memory};
}

/// The algorithms chosen so far on one device, so that the heuristics run once per geometry.
class cudnn_algorithm_cache {
public:
    /// The cached choice for key, or find()'s, which is then cached.
    template <class Find>
    cudnn_algorithm find_or(const conv_algorithm_key& key, Find&& find) {
        std::lock_guard lock(mutex_);
        if (const auto it = chosen_.find(key); it != chosen_.end()) return it->second;
        return chosen_.emplace(key, find()).first->second;
    }
    std::size_t size() {
        std::lock_guard lock(mutex_);
        return chosen_.size();
    }

private:
    std::mutex mutex_;
    std::map<conv_algorithm_key, cudnn_algorithm> chosen_;
};

/// The current device's cache (made on first use, kept for the process, as the handles are).
inline cudnn_algorithm_cache& algorithm_cache() {
    return *per_device<cudnn_algorithm_cache*>([] { return new cudnn_algorithm_cache; });
}

/// A 4-D NCHW tensor descriptor, destroyed on scope exit.
class cudnn_tensor_descriptor {
public:
    cudnn_tensor_descriptor(cudnnDataType_t type, int n, int c, int h, int w) {
        check(cudnnCreateTensorDescriptor(&handle_), "cudnnCreateTensorDescriptor");
        const cudnnStatus_t status = cudnnSetTensor4dDescriptor(handle_, CUDNN_TENSOR_NCHW, type, n, c, h, w);
        if (status != CUDNN_STATUS_SUCCESS) {
            (void)cudnnDestroyTensorDescriptor(handle_);
            check(status, "cudnnSetTensor4dDescriptor");
        }
    }
    ~cudnn_tensor_descriptor() { (void)cudnnDestroyTensorDescriptor(handle_); }
    cudnn_tensor_descriptor(const cudnn_tensor_descriptor&) = delete;
    cudnn_tensor_descriptor& operator=(const cudnn_tensor_descriptor&) = delete;
    cudnnTensorDescriptor_t get() const { return handle_; }

private:
    cudnnTensorDescriptor_t handle_ = nullptr;
};

/// The weight's (out, in, kh, kw) filter descriptor, destroyed on scope exit.
class cudnn_filter_descriptor {
public:
    cudnn_filter_descriptor(cudnnDataType_t type, int k, int c, int h, int w) {
        check(cudnnCreateFilterDescriptor(&handle_), "cudnnCreateFilterDescriptor");
        const cudnnStatus_t status = cudnnSetFilter4dDescriptor(handle_, type, CUDNN_TENSOR_NCHW, k, c, h, w);
        if (status != CUDNN_STATUS_SUCCESS) {
            (void)cudnnDestroyFilterDescriptor(handle_);
            check(status, "cudnnSetFilter4dDescriptor");
        }
    }
    ~cudnn_filter_descriptor() { (void)cudnnDestroyFilterDescriptor(handle_); }
    cudnn_filter_descriptor(const cudnn_filter_descriptor&) = delete;
    cudnn_filter_descriptor& operator=(const cudnn_filter_descriptor&) = delete;
    cudnnFilterDescriptor_t get() const { return handle_; }

private:
    cudnnFilterDescriptor_t handle_ = nullptr;
};

/// A cross-correlation descriptor (cuDNN's "convolution" flips the kernel; F.conv2d does not),
/// destroyed on scope exit.
class cudnn_convolution_descriptor {
public:
    cudnn_convolution_descriptor(int pad_h, int pad_w, int stride_h, int stride_w, cudnnDataType_t compute, cudnnMathType_t math) {
        check(cudnnCreateConvolutionDescriptor(&handle_), "cudnnCreateConvolutionDescriptor");
        cudnnStatus_t status =
            cudnnSetConvolution2dDescriptor(handle_, pad_h, pad_w, stride_h, stride_w, 1, 1, CUDNN_CROSS_CORRELATION, compute);
        if (status == CUDNN_STATUS_SUCCESS) status = cudnnSetConvolutionMathType(handle_, math);
        if (status != CUDNN_STATUS_SUCCESS) {
            (void)cudnnDestroyConvolutionDescriptor(handle_);
            check(status, "cudnnSetConvolution2dDescriptor / cudnnSetConvolutionMathType");
        }
    }
    ~cudnn_convolution_descriptor() { (void)cudnnDestroyConvolutionDescriptor(handle_); }
    cudnn_convolution_descriptor(const cudnn_convolution_descriptor&) = delete;
    cudnn_convolution_descriptor& operator=(const cudnn_convolution_descriptor&) = delete;
    cudnnConvolutionDescriptor_t get() const { return handle_; }
    void set_math(cudnnMathType_t math) const { check(cudnnSetConvolutionMathType(handle_, math), "cudnnSetConvolutionMathType"); }

private:
    cudnnConvolutionDescriptor_t handle_ = nullptr;
};

/// The descriptors of one geometry (x as padded for cuDNN), and the choice of each pass's
/// algorithm through the device's cache.
class cudnn_conv_call {
public:
    cudnn_conv_call(const conv2d_geometry& g, const cudnn_conv_problem& p, cudnnDataType_t type, bool tf32)
        : g_(g), type_(type), tf32_(type == CUDNN_DATA_FLOAT && tf32),
          x_(type, cudnn_int(g.batch, "batch", g), cudnn_int(g.in_channels, "in_channels", g), cudnn_int(p.in_h, "padded in_h", g),
             cudnn_int(p.in_w, "padded in_w", g)),
          y_(type, cudnn_int(g.batch, "batch", g), cudnn_int(g.out_channels, "out_channels", g), cudnn_int(g.out_h, "out_h", g),
             cudnn_int(g.out_w, "out_w", g)),
          w_(type, cudnn_int(g.out_channels, "out_channels", g), cudnn_int(g.in_channels, "in_channels", g),
             cudnn_int(g.kernel_h, "kernel_h", g), cudnn_int(g.kernel_w, "kernel_w", g)),
          conv_(cudnn_int(p.pad_h, "pad_h", g), cudnn_int(p.pad_w, "pad_w", g), cudnn_int(g.stride_h, "stride_h", g),
                cudnn_int(g.stride_w, "stride_w", g), type, requested_math(type, tf32)) {
        // cuDNN's own output size must be the geometry's: a mismatch would be a wrong padding split.
        int n = 0, c = 0, h = 0, w = 0;
        check(cudnnGetConvolution2dForwardOutputDim(conv_.get(), x_.get(), w_.get(), &n, &c, &h, &w),
              "cudnnGetConvolution2dForwardOutputDim");
        if (n != g.batch || c != g.out_channels || h != g.out_h || w != g.out_w)
            throw shape_error(fmt::format("cuDNN conv: cuDNN makes the output ({}, {}, {}, {}) where ({}, {}, {}, {}) is expected, for {}",
                                          n, c, h, w, g.batch, g.out_channels, g.out_h, g.out_w, describe(g)));
    }

    cudnnTensorDescriptor_t x() const { return x_.get(); }
    cudnnTensorDescriptor_t y() const { return y_.get(); }
    cudnnFilterDescriptor_t w() const { return w_.get(); }
    cudnnConvolutionDescriptor_t conv() const { return conv_.get(); }

    /// The pass's algorithm (from the cache, or the heuristics on first use), with the
    /// convolution descriptor set to its math type.
    cudnn_algorithm algorithm(conv_pass pass) const {
        const cudnn_algorithm chosen = algorithm_cache().find_or(algorithm_key(g_, type_, tf32_, pass), [&] { return find(pass); });
        conv_.set_math(chosen.math);
        return chosen;
    }

private:
    /// The heuristics' choice for the pass, with the workspace it needs at its math type.
    cudnn_algorithm find(conv_pass pass) const {
        cudnn_algorithm chosen;
        switch (pass) {
        case conv_pass::forward:
            chosen = ask_heuristics<cudnnConvolutionFwdAlgoPerf_t>(
                pass, cudnnGetConvolutionForwardAlgorithmMaxCount, [&](int requested, int* returned, cudnnConvolutionFwdAlgoPerf_t* out) {
                    return cudnnGetConvolutionForwardAlgorithm_v7(cudnn(), x(), w(), conv(), y(), requested, returned, out);
                });
            check(cudnnGetConvolutionForwardWorkspaceSize(cudnn(), x(), w(), conv(), y(), static_cast<cudnnConvolutionFwdAlgo_t>(chosen.algo),
                                                          &chosen.workspace_bytes),
                  "cudnnGetConvolutionForwardWorkspaceSize");
            break;
        case conv_pass::backward_data:
            chosen = ask_heuristics<cudnnConvolutionBwdDataAlgoPerf_t>(
                pass, cudnnGetConvolutionBackwardDataAlgorithmMaxCount,
                [&](int requested, int* returned, cudnnConvolutionBwdDataAlgoPerf_t* out) {
                    return cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnn(), w(), y(), conv(), x(), requested, returned, out);
                });
            check(cudnnGetConvolutionBackwardDataWorkspaceSize(cudnn(), w(), y(), conv(), x(),
                                                               static_cast<cudnnConvolutionBwdDataAlgo_t>(chosen.algo), &chosen.workspace_bytes),
                  "cudnnGetConvolutionBackwardDataWorkspaceSize");
            break;
        case conv_pass::backward_filter:
            chosen = ask_heuristics<cudnnConvolutionBwdFilterAlgoPerf_t>(
                pass, cudnnGetConvolutionBackwardFilterAlgorithmMaxCount,
                [&](int requested, int* returned, cudnnConvolutionBwdFilterAlgoPerf_t* out) {
                    return cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnn(), x(), y(), conv(), w(), requested, returned, out);
                });
            check(cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnn(), x(), y(), conv(), w(),
                                                                 static_cast<cudnnConvolutionBwdFilterAlgo_t>(chosen.algo),
                                                                 &chosen.workspace_bytes),
                  "cudnnGetConvolutionBackwardFilterWorkspaceSize");
            break;
        }
        return chosen;
    }

    /// Runs one pass's _v7 heuristics at the requested math type and picks from their list; the
    /// descriptor is left at the chosen algorithm's math type (for its workspace size).
    template <class Perf, class MaxCount, class Query>
    cudnn_algorithm ask_heuristics(conv_pass pass, MaxCount max_count, Query query) const {
        conv_.set_math(requested_math(type_, tf32_));
        int count = 0, returned = 0;
        check(max_count(cudnn(), &count), "cudnnGetConvolution*AlgorithmMaxCount");
        std::vector<Perf> results(static_cast<std::size_t>(std::max(count, 1)));
        check(query(count, &returned, results.data()), "cudnnGetConvolution*Algorithm_v7");
        const bool fma_only = type_ == CUDNN_DATA_FLOAT && !tf32_;
        const cudnn_algorithm chosen = pick_algorithm(results.data(), returned, fma_only, cudnn_workspace_limit_bytes, pass, g_);
        conv_.set_math(chosen.math);
        return chosen;
    }

    conv2d_geometry g_;
    cudnnDataType_t type_;
    bool tf32_;
    cudnn_tensor_descriptor x_, y_;
    cudnn_filter_descriptor w_;
    cudnn_convolution_descriptor conv_;
};

/// Workspace for one cuDNN call, from vediff's caching allocator (reused across steps).
inline tensor<std::uint8_t, cuda> cudnn_workspace(std::size_t bytes) {
    return tensor<std::uint8_t, cuda>(tensor_shape{static_cast<std::int64_t>(bytes)});
}

/// db (Cout) += Σ over images and pixels of dy (N, Cout, Ho, Wo), in dy's type.
template <class T>
void accumulate_bias_gradient(T* db, const T* dy, const conv2d_geometry& g) {
    const cudnnDataType_t type = cudnn_data_type<T>;
    const cudnn_tensor_descriptor dy_desc(type, cudnn_int(g.batch, "batch", g), cudnn_int(g.out_channels, "out_channels", g),
                                          cudnn_int(g.out_h, "out_h", g), cudnn_int(g.out_w, "out_w", g));
    const cudnn_tensor_descriptor db_desc(type, 1, cudnn_int(g.out_channels, "out_channels", g), 1, 1);
    const cudnn_scale<T> one = 1;
    check(cudnnConvolutionBackwardBias(cudnn(), &one, dy_desc.get(), dy, &one, db_desc.get(), db), "cudnnConvolutionBackwardBias");
}

// ---- The three paths ---------------------------------------------------------------------------

/// 1×1, stride 1, no padding: per image a (Cout × Cin)·(Cin × HW) product, all images in one
/// strided-batched call with the weight shared (stride 0).
struct pointwise_conv {
    template <class P, class T>
    static void forward(T* y, const T* x, const T* w, const T* bias, const conv2d_geometry& g) {
        const std::int64_t plane = g.in_plane();
        if (bias) for_each_element(g.batch * g.out_channels * plane, channel_rows_op<T>{y, bias, plane, g.out_channels});
        // y[n] (Cout × plane) = w (Cout × Cin) · x[n] (Cin × plane), onto the bias rows when there is a bias.
        product<P>(g.batch, g.out_channels, plane, g.in_channels, w, g.in_channels, 0, false, x, plane, g.in_channels * plane, false,
                   bias ? T(1) : T(0), y, plane, g.out_channels * plane);
    }

    template <class P, class T>
    static void backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const conv2d_geometry& g) {
        const std::int64_t plane = g.in_plane(), cin = g.in_channels, cout = g.out_channels;
        // dx[n] (Cin × plane) = wᵀ · dy[n]
        if (dx) product<P>(g.batch, cin, plane, cout, w, cin, 0, true, dy, plane, cout * plane, false, T(0), dx, plane, cin * plane);
        if (dw) {
            if (g.batch == 1) {
                product<P>(1, cout, cin, plane, dy, plane, 0, false, x, plane, 0, true, T(1), dw, cin, 0);
            } else {
                // dw += Σ_n dy[n]·x[n]ᵀ: the N products in one call, then their sum as a (1 × N)·(N × Cout·Cin)
                // product with ones, in FP32 math so that the sum over images is not rounded to TF32.
                tensor<T, cuda> per_image(tensor_shape{g.batch, cout * cin});
                product<P>(g.batch, cout, cin, plane, dy, plane, cout * plane, false, x, plane, cin * plane, true, T(0), per_image.data(),
                           cin, cout * cin);
                const tensor<T, cuda> ones = tensor<T, cuda>::full(tensor_shape{g.batch}, T(1));
                gemm_kernels<cuda>::gemm_with_math(false, 1, cout * cin, g.batch, T(1), ones.data(), g.batch, false, per_image.data(),
                                                   cout * cin, false, T(1), dw, cout * cin);
            }
        }
        if (db) accumulate_bias_gradient(db, dy, g);
    }

private:
    /// Strided-batched C = op(A)·op(B) + beta·C under the policy: bf16 copies of the operands and
    /// fp32 sums (bf16_mixed), else the element type with TF32 as set_cuda_conv_tf32.
    template <class P, class T>
    static void product(std::int64_t batch, std::int64_t m, std::int64_t n, std::int64_t k, const T* a, std::int64_t lda,
                        std::int64_t stride_a, bool transpose_a, const T* b, std::int64_t ldb, std::int64_t stride_b, bool transpose_b,
                        T beta, T* c, std::int64_t ldc, std::int64_t stride_c) {
        if constexpr (P::rounds_operands) {
            static_assert(std::is_same_v<T, float>, "bf16_mixed convolutions take float tensors (fp32 master values)");
            gemm_kernels<cuda>::gemm_batched_bf16(batch, m, n, k, 1.0f, a, lda, stride_a, transpose_a, b, ldb, stride_b, transpose_b, beta,
                                                  c, ldc, stride_c);
        } else {
            gemm_kernels<cuda>::gemm_batched_with_math(cuda_conv_tf32(), batch, m, n, k, T(1), a, lda, stride_a, transpose_a, b, ldb,
                                                       stride_b, transpose_b, beta, c, ldc, stride_c);
        }
    }
};

/// fp32 and double convolutions other than the pointwise ones, through cuDNN.
struct cudnn_conv {
    template <class T>
    static void forward(T* y, const T* x, const T* w, const T* bias, const conv2d_geometry& g) {
        const cudnn_conv_problem problem = cudnn_problem(g);
        const tensor<T, cuda> padded = padded_input(x, g, problem);
        const cudnn_conv_call call(g, problem, cudnn_data_type<T>, cuda_conv_tf32());
        const cudnn_algorithm algorithm = call.algorithm(conv_pass::forward);
        tensor<std::uint8_t, cuda> workspace = cudnn_workspace(algorithm.workspace_bytes);
        const cudnn_scale<T> one = 1, zero = 0;
        check(cudnnConvolutionForward(cudnn(), &one, call.x(), problem.pads_explicitly() ? padded.data() : x, call.w(), w, call.conv(),
                                      static_cast<cudnnConvolutionFwdAlgo_t>(algorithm.algo), workspace.data(), algorithm.workspace_bytes,
                                      &zero, call.y(), y),
              "cudnnConvolutionForward");
        if (bias) {
            const cudnn_tensor_descriptor bias_desc(cudnn_data_type<T>, 1, cudnn_int(g.out_channels, "out_channels", g), 1, 1);
            check(cudnnAddTensor(cudnn(), &one, bias_desc.get(), bias, &one, call.y(), y), "cudnnAddTensor (conv bias)");
        }
    }

    template <class T>
    static void backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const conv2d_geometry& g) {
        const cudnn_conv_problem problem = cudnn_problem(g);
        const cudnn_conv_call call(g, problem, cudnn_data_type<T>, cuda_conv_tf32());
        const cudnn_scale<T> one = 1, zero = 0;
        if (dx) {
            const cudnn_algorithm algorithm = call.algorithm(conv_pass::backward_data);
            tensor<std::uint8_t, cuda> workspace = cudnn_workspace(algorithm.workspace_bytes);
            // With explicit padding, cuDNN's dx is the padded copy's; its interior is x's.
            tensor<T, cuda> padded_dx =
                problem.pads_explicitly() ? tensor<T, cuda>(tensor_shape{g.batch * g.in_channels * problem.in_h * problem.in_w}) : tensor<T, cuda>{};
            check(cudnnConvolutionBackwardData(cudnn(), &one, call.w(), w, call.y(), dy, call.conv(),
                                               static_cast<cudnnConvolutionBwdDataAlgo_t>(algorithm.algo), workspace.data(),
                                               algorithm.workspace_bytes, &zero, call.x(), problem.pads_explicitly() ? padded_dx.data() : dx),
                  "cudnnConvolutionBackwardData");
            if (problem.pads_explicitly())
                for_each_element(g.batch * g.in_channels * g.in_plane(), crop_planes_op<T>{dx, padded_dx.data(), problem.extra});
        }
        if (dw) {
            const tensor<T, cuda> padded = padded_input(x, g, problem);
            const cudnn_algorithm algorithm = call.algorithm(conv_pass::backward_filter);
            tensor<std::uint8_t, cuda> workspace = cudnn_workspace(algorithm.workspace_bytes);
            check(cudnnConvolutionBackwardFilter(cudnn(), &one, call.x(), problem.pads_explicitly() ? padded.data() : x, call.y(), dy,
                                                 call.conv(), static_cast<cudnnConvolutionBwdFilterAlgo_t>(algorithm.algo), workspace.data(),
                                                 algorithm.workspace_bytes, &one, call.w(), dw),
                  "cudnnConvolutionBackwardFilter");
        }
        if (db) accumulate_bias_gradient(db, dy, g);
    }

private:
    /// x with the excess padding of an asymmetric geometry; empty where cuDNN pads it all.
    template <class T>
    static tensor<T, cuda> padded_input(const T* x, const conv2d_geometry& g, const cudnn_conv_problem& problem) {
        if (!problem.pads_explicitly()) return tensor<T, cuda>{};
        tensor<T, cuda> padded(tensor_shape{g.batch, g.in_channels, problem.in_h, problem.in_w});
        for_each_element(padded.numel(), pad_planes_op<T>{padded.data(), x, problem.extra});
        return padded;
    }
};

/// im2col + cuBLAS, one image at a time (the column buffer stays one image's size).
struct im2col_conv {
    template <class P, class T>
    static void forward(T* y, const T* x, const T* w, const T* bias, const conv2d_geometry& g) {
        const conv_shape s(g);
        const std::int64_t patch = g.patch(), plane = g.out_plane();
        tensor<T, cuda> col(tensor_shape{patch * plane});
        for (std::int64_t n = 0; n < g.batch; ++n) {
            const T* xn = x + n * g.in_channels * g.in_plane();
            T* yn = y + n * g.out_channels * plane;
            for_each_element(patch * plane, im2col_op<T>{col.data(), xn, s});
            if (bias) for_each_element(g.out_channels * plane, channel_rows_op<T>{yn, bias, plane, g.out_channels});
            product<P>(g.out_channels, plane, patch, T(1), w, patch, false, col.data(), plane, false, bias ? T(1) : T(0), yn, plane);
        }
    }

    template <class P, class T>
    static void backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const conv2d_geometry& g) {
        const conv_shape s(g);
        const std::int64_t patch = g.patch(), plane = g.out_plane();
        tensor<T, cuda> col(tensor_shape{patch * plane});
        tensor<T, cuda> ones = db ? tensor<T, cuda>::full(tensor_shape{plane}, T(1)) : tensor<T, cuda>{};
        for (std::int64_t n = 0; n < g.batch; ++n) {
            const T* xn = x + n * g.in_channels * g.in_plane();
            const T* dyn = dy + n * g.out_channels * plane;
            if (dw) {
                for_each_element(patch * plane, im2col_op<T>{col.data(), xn, s});
                product<P>(g.out_channels, patch, plane, T(1), dyn, plane, false, col.data(), plane, true, T(1), dw, patch);
            }
            // The bias gradient sums dy in fp32 under every policy, as on the cpu.
            if (db) gemm_kernels<cuda>::gemm(g.out_channels, 1, plane, T(1), dyn, plane, false, ones.data(), 1, false, T(1), db, 1);
            if (dx) {
                // dcol = wᵀ·dy (patch × plane) reuses the column buffer, then col2im gathers it.
                product<P>(patch, plane, g.out_channels, T(1), w, patch, true, dyn, plane, false, T(0), col.data(), plane);
                for_each_element(g.in_channels * g.in_plane(), col2im_op<T>{dx + n * g.in_channels * g.in_plane(), col.data(), s});
            }
        }
    }

private:
    template <class P, class T>
    static void product(std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a, std::int64_t lda, bool transpose_a,
                        const T* b, std::int64_t ldb, bool transpose_b, T beta, T* c, std::int64_t ldc) {
        if constexpr (P::rounds_operands) {
            static_assert(std::is_same_v<T, float>, "bf16_mixed convolutions take float tensors (fp32 master values)");
            gemm_kernels<cuda>::gemm_bf16(m, n, k, alpha, a, lda, transpose_a, b, ldb, transpose_b, beta, c, ldc);
        } else {
            gemm_kernels<cuda>::gemm_with_math(cuda_conv_tf32(), m, n, k, alpha, a, lda, transpose_a, b, ldb, transpose_b, beta, c, ldc);
        }
    }
};

} // namespace cuda_detail

template <>
struct conv_kernels<cuda> {
    /// y (N, Cout, Ho, Wo) = conv(x (N, Cin, H, W), w (Cout, Cin, kh, kw)) + bias (Cout); bias may be null.
    /// P: the precision policy of the products (core/precision.hpp); under bf16_mixed the products
    /// take bf16 copies of x and w and sum in fp32 (gemm_kernels<cuda>::gemm_bf16 and its batched form).
    template <class P = fp32, class T>
    static void conv2d_forward(T* y, const T* x, const T* w, const T* bias, const conv2d_geometry& g) {
        static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cuda conv: float or double");
        switch (cuda_detail::choose_conv_path(g, P::rounds_operands)) {
        case cuda_detail::conv_path::pointwise_gemm: cuda_detail::pointwise_conv::forward<P>(y, x, w, bias, g); return;
        case cuda_detail::conv_path::cudnn: cuda_detail::cudnn_conv::forward(y, x, w, bias, g); return;
        case cuda_detail::conv_path::im2col: cuda_detail::im2col_conv::forward<P>(y, x, w, bias, g); return;
        }
    }

    /// Given dy (N, Cout, Ho, Wo): writes dx (null: not needed) and accumulates dw += ∂/∂w (null:
    /// not needed) and db += ∂/∂bias (null: no bias).
    template <class P = fp32, class T>
    static void conv2d_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const conv2d_geometry& g) {
        static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cuda conv: float or double");
        switch (cuda_detail::choose_conv_path(g, P::rounds_operands)) {
        case cuda_detail::conv_path::pointwise_gemm: cuda_detail::pointwise_conv::backward<P>(dx, dw, db, dy, x, w, g); return;
        case cuda_detail::conv_path::cudnn: cuda_detail::cudnn_conv::backward(dx, dw, db, dy, x, w, g); return;
        case cuda_detail::conv_path::im2col: cuda_detail::im2col_conv::backward<P>(dx, dw, db, dy, x, w, g); return;
        }
    }
};

} // namespace vediff
