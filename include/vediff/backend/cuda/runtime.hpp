#pragma once
// The cuda device's runtime: errors that name the failing call, the stream (one per device) on
// which the backend orders every kernel, copy and allocation, the cuBLAS handle bound to that
// stream, the TF32 switch, and whether a GPU is present at all. Compiled by nvcc only (backend/cuda.hpp).
#include <array>
#include <atomic>
#include <mutex>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <thrust/execution_policy.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include <fmt/format.h>

#include "vediff/core/device.hpp"

namespace vediff {

/// A CUDA runtime or cuBLAS call failed; the message names the call and the cause.
struct cuda_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// The device could not hold an allocation even after vediff's cache was released; the message
/// names the requested size.
struct cuda_out_of_memory : cuda_error {
    using cuda_error::cuda_error;
};

namespace cuda_detail {

inline void check(cudaError_t status, const char* what) {
    if (status != cudaSuccess) {
        (void)cudaGetLastError();  // clear the sticky error of a non-fatal failure
        throw cuda_error(fmt::format(fmt::runtime("cuda: {} failed: {} ({})"), what, cudaGetErrorString(status), cudaGetErrorName(status)));
    }
}

inline void check(cublasStatus_t status, const char* what) {
    if (status != CUBLAS_STATUS_SUCCESS)
        throw cuda_error(fmt::format(fmt::runtime("cuBLAS: {} failed: {}"), what, cublasGetStatusString(status)));
}

inline constexpr int max_devices = 64;

/// The device current on this thread (cudaSetDevice; device 0 unless set).
inline int current_device() {
    int d = 0;
    check(cudaGetDevice(&d), "cudaGetDevice");
    if (d < 0 || d >= max_devices) throw cuda_error(fmt::format(fmt::runtime("cuda: device {} is beyond the {} vediff supports"), d, max_devices));
    return d;
}

/// Per device, created on first use while that device is current: a process that drives GPU
/// local_rank (distributed training sets it before anything else) gets that GPU's stream and
/// cuBLAS handle, and a process that switches devices gets each device's own.
template <class Resource, class Create>
Resource per_device(Create&& create) {
    struct slots {
        std::array<std::once_flag, max_devices> once;
        std::array<Resource, max_devices> value{};
    };
    static slots all;
    const int d = current_device();
    std::call_once(all.once[static_cast<std::size_t>(d)], [&] { all.value[static_cast<std::size_t>(d)] = create(); });
    return all.value[static_cast<std::size_t>(d)];
}

/// The backend's stream on the current device. Everything of the backend runs on it in order, so
/// a block released by one op and handed to the next by the caching allocator is never used by
/// two kernels at once.
inline cudaStream_t stream() {
    return per_device<cudaStream_t>([] {
        cudaStream_t created = nullptr;
        check(cudaStreamCreateWithFlags(&created, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
        return created;
    });
}

/// f(i) for i in [0, n), one thread each, on the backend's stream.
template <class F>
void for_each_element(std::int64_t n, F f) {
    if (n > 0)
        thrust::for_each(thrust::cuda::par_nosync.on(stream()), thrust::counting_iterator<std::int64_t>(0),
                         thrust::counting_iterator<std::int64_t>(n), f);
}

/// Waits until all work queued on the backend's stream has finished.
inline void synchronize() { check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize"); }

/// The cuBLAS handle of the current device, bound to its backend stream.
inline cublasHandle_t cublas() {
    return per_device<cublasHandle_t>([] {
        cublasHandle_t created = nullptr;
        check(cublasCreate(&created), "cublasCreate");
        check(cublasSetStream(created, stream()), "cublasSetStream");
        return created;
    });
}

/// The cuBLASLt handle of the current device (its calls take the stream explicitly).
inline cublasLtHandle_t cublas_lt() {
    return per_device<cublasLtHandle_t>([] {
        cublasLtHandle_t created = nullptr;
        check(cublasLtCreate(&created), "cublasLtCreate");
        return created;
    });
}

inline std::atomic<bool>& tf32_flag() {
    static std::atomic<bool> enabled{false};
    return enabled;
}

} // namespace cuda_detail

/// Number of CUDA devices this process can use: 0 without a GPU or without a driver (never throws).
inline int cuda_device_count() noexcept {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

inline bool cuda_available() noexcept { return cuda_device_count() > 0; }

/// TF32 tensor-core math for float matrix products (about 10 mantissa bits in the products).
/// Off by default, so that cuda results match the cpu backend's within float rounding.
inline void set_cuda_tf32(bool enabled) noexcept { cuda_detail::tf32_flag() = enabled; }
inline bool cuda_tf32() noexcept { return cuda_detail::tf32_flag(); }

template <>
struct device_selection<cuda> {
    /// GPU local_rank of this node; fails, naming both numbers, when there are fewer GPUs.
    static void use(int local_rank) {
        int n = 0;
        cuda_detail::check(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
        if (local_rank >= n)
            throw cuda_error(fmt::format(fmt::runtime("local rank {} has no GPU of its own: this node has {} (start at most one rank per GPU)"),
                                         local_rank, n));
        cuda_detail::check(cudaSetDevice(local_rank), "cudaSetDevice");
    }
};

template <>
struct device_check<cuda> {
    static void require_available() {
        int n = 0;
        const cudaError_t status = cudaGetDeviceCount(&n);
        if (status != cudaSuccess) {
            (void)cudaGetLastError();
            throw cuda_error(fmt::format(fmt::runtime("no usable CUDA device: {} ({})"), cudaGetErrorString(status), cudaGetErrorName(status)));
        }
        if (n == 0) throw cuda_error("no CUDA device on this machine");
    }
};

} // namespace vediff
