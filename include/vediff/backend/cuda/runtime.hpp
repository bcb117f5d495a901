#pragma once
// The cuda device's runtime: errors that name the failing call, the stream (one per device) on
// which the backend orders every kernel, copy and allocation (public: cuda_stream(), cuda_event),
// the cuBLAS and cuDNN handles, the TF32 switches, and whether a GPU is present at all. Compiled by nvcc only (backend/cuda.hpp).
#include <array>
#include <atomic>
#include <mutex>
#include <new>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include <dlfcn.h>
#include <unistd.h>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <thrust/execution_policy.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/system_error.h>

#include <fmt/format.h>

#include "vediff/backend/cuda/index_check.hpp"
#include "vediff/core/device.hpp"

namespace vediff {

/// A CUDA runtime, cuBLAS or cuDNN call failed; the message names the call and the cause.
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
        // Resets the last-error state so that the next check does not report this failure again.
        // A sticky error (an illegal address, a device-side assert) is not cleared by this: it
        // poisons the context, and every later call fails with it until the process ends.
        (void)cudaGetLastError();
        throw cuda_error(fmt::format(fmt::runtime("cuda: {} failed: {} ({})"), what, cudaGetErrorString(status), cudaGetErrorName(status)));
    }
}

inline void check(cublasStatus_t status, const char* what) {
    if (status != CUBLAS_STATUS_SUCCESS)
        throw cuda_error(fmt::format(fmt::runtime("cuBLAS: {} failed: {}"), what, cublasGetStatusString(status)));
}

// CUDNN_FMA_MATH (convolutions without TF32) and the _v7 algorithm heuristics came with cuDNN 8.
#if CUDNN_MAJOR < 8
#error "vediff's cuda backend needs cuDNN 8 or later (cuDNN 9 recommended)"
#endif

inline void check(cudnnStatus_t status, const char* what) {
    if (status != CUDNN_STATUS_SUCCESS)
        throw cuda_error(fmt::format(fmt::runtime("cuDNN: {} failed: {}"), what, cudnnGetErrorString(status)));
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

/// An empty kernel: whether the build has code for a GPU is whether this one has.
template <int = 0>
__global__ void kernel_image_probe() {}

/// What to say when this build has no kernel for the device (the build's architectures lack it).
inline std::string missing_kernel_image_message(const std::string& device_name, int major, int minor, const char* cause) {
    return fmt::format(fmt::runtime("cuda: this build of vediff has no kernels for the {} (compute capability {}.{}): {}; "
                                    "rebuild with -DCMAKE_CUDA_ARCHITECTURES={}{} (or native)"),
                       device_name, major, minor, cause, major, minor);
}

/// Fails at the first use of a device whose architecture the build does not cover, naming both,
/// instead of at the first kernel launch with "no kernel image is available".
inline void require_kernel_image(int device) {
    cudaFuncAttributes attributes{};
    const cudaError_t status = cudaFuncGetAttributes(&attributes, kernel_image_probe<>);
    if (status == cudaSuccess) return;
    (void)cudaGetLastError();
    cudaDeviceProp properties{};
    check(cudaGetDeviceProperties(&properties, device), "cudaGetDeviceProperties");
    throw cuda_error(missing_kernel_image_message(properties.name, properties.major, properties.minor, cudaGetErrorName(status)));
}

/// The backend's stream on the current device. Everything of the backend runs on it in order, so
/// a block released by one op and handed to the next by the caching allocator is never used by
/// two kernels at once. Its creation checks that the build has kernels for the device.
inline cudaStream_t stream() {
    return per_device<cudaStream_t>([] {
        require_kernel_image(current_device());
        cudaStream_t created = nullptr;
        check(cudaStreamCreateWithFlags(&created, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
        return created;
    });
}

/// Device memory for the deferred index checks' results (index_check.hpp): slot i is reset and
/// read on the backend's stream, so each reset is ordered before its check and each read after.
struct device_fault_slots {
    unsigned long long* base = nullptr;
    void clear(std::size_t i) const {
        check(cudaMemsetAsync(base + i, 0xff, sizeof *base, stream()), "cudaMemsetAsync (an index check's slot)");
    }
    unsigned long long* address(std::size_t i) const { return base + i; }
    void read(std::size_t n, unsigned long long* out) const {
        check(cudaMemcpyAsync(out, base, n * sizeof *base, cudaMemcpyDeviceToHost, stream()), "cudaMemcpyAsync (index check results)");
        check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize (index check results)");
    }
};

/// Checks queued between two reads of the host; more wait for the device first.
inline constexpr std::size_t index_check_slots = 256;

/// The current device's deferred index checks (kept for the process's life, as its stream is).
inline deferred_index_checks<device_fault_slots>* index_checks() {
    return per_device<deferred_index_checks<device_fault_slots>*>([] {
        unsigned long long* base = nullptr;
        check(cudaMalloc(&base, index_check_slots * sizeof *base), "cudaMalloc (index check slots)");
        return new deferred_index_checks<device_fault_slots>(device_fault_slots{base}, index_check_slots);
    });
}

/// Throws the first fault the index checks queued so far have found (reads their results; the
/// callers are the host's reads from the device, which wait for the stream anyway).
inline void raise_index_faults() {
    auto* checks = index_checks();
    if (checks->pending() > 0) checks->raise_pending();
}

/// a / d and a % d for non-negative indices, in 32-bit unsigned arithmetic when both fit (nearly
/// every tensor): on a GPU a 64-bit division is a long software sequence, a 32-bit one a few
/// instructions, and neighbouring threads take the same branch.
__host__ __device__ inline std::int64_t index_div(std::int64_t a, std::int64_t d) {
    if (((a | d) >> 32) == 0) return static_cast<std::int64_t>(static_cast<std::uint32_t>(a) / static_cast<std::uint32_t>(d));
    return a / d;
}
__host__ __device__ inline std::int64_t index_mod(std::int64_t a, std::int64_t d) {
    if (((a | d) >> 32) == 0) return static_cast<std::int64_t>(static_cast<std::uint32_t>(a) % static_cast<std::uint32_t>(d));
    return a % d;
}

/// Runs a Thrust algorithm (`what` names it) with its failures turned into vediff's: Thrust
/// reports a failed launch or synchronization as thrust::system_error and a failed temporary
/// allocation as a std::bad_alloc, which callers catching cuda_error would miss.
template <class F>
decltype(auto) thrust_call(const char* what, F&& f) {
    try {
        return f();
    } catch (const thrust::system_error& e) {
        (void)cudaGetLastError();
        throw cuda_error(fmt::format(fmt::runtime("cuda: {} failed: {}"), what, e.what()));
    } catch (const std::bad_alloc& e) {
        throw cuda_out_of_memory(fmt::format(fmt::runtime("cuda: {} could not allocate its temporary storage: {}"), what, e.what()));
    }
}

/// f(i) for i in [0, n), one thread each, on the backend's stream.
template <class F>
void for_each_element(std::int64_t n, F f) {
    if (n > 0)
        cuda_detail::thrust_call("thrust::for_each", [&] {
            return thrust::for_each(thrust::cuda::par_nosync.on(stream()), thrust::counting_iterator<std::int64_t>(0),
                                    thrust::counting_iterator<std::int64_t>(n), f);
        });
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

/// The cuDNN handle of the current device, bound to its backend stream.
inline cudnnHandle_t cudnn() {
    return per_device<cudnnHandle_t>([] {
        cudnnHandle_t created = nullptr;
        check(cudnnCreate(&created), "cudnnCreate");
        check(cudnnSetStream(created, stream()), "cudnnSetStream");
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
inline std::atomic<bool>& conv_tf32_flag() {
    static std::atomic<bool> enabled{true};
    return enabled;
}
inline std::atomic<int>& attention_path_choice() {
    static std::atomic<int> choice{0};  // cuda_attention_path::automatic
    return choice;
}

} // namespace cuda_detail

namespace cuda_detail {

/// Whether an NVIDIA driver is installed: its control device exists or its library (libcuda.so.1)
/// can be loaded.
inline bool nvidia_driver_installed() noexcept {
    if (access("/dev/nvidiactl", F_OK) == 0) return true;
    void* driver = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (!driver) return false;
    dlclose(driver);
    return true;
}

/// The number of usable devices from cudaGetDeviceCount's answer. Only a machine without a GPU
/// reads as 0: cudaErrorNoDevice, or no driver at all (the runtime then says
/// cudaErrorInsufficientDriver, as it does for a driver too old for it). Any other failure, that
/// of a machine whose GPU cannot be used, throws naming the cause: a test or job that skipped
/// there would "pass" on a GPU machine without having run.
inline int usable_device_count(cudaError_t status, int count, bool driver_installed) {
    if (status == cudaSuccess) return count;
    if (status == cudaErrorNoDevice) return 0;
    if (status == cudaErrorInsufficientDriver && !driver_installed) return 0;
    std::string hint;
    if (status == cudaErrorInsufficientDriver)
        hint = fmt::format(fmt::runtime(": the installed NVIDIA driver is older than this CUDA runtime ({}.{}) needs; update the driver"),
                           CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
    throw cuda_error(fmt::format(fmt::runtime("cuda: a GPU may be present but cannot be used: cudaGetDeviceCount failed: {} ({}){}"),
                                 cudaGetErrorString(status), cudaGetErrorName(status), hint));
}

} // namespace cuda_detail

/// Number of CUDA devices this process can use: 0 on a machine without a GPU (no device, or no
/// NVIDIA driver installed). Throws cuda_error where a driver is installed but the devices cannot
/// be used (a driver too old for CUDA 13, a broken installation), so that nothing skips silently.
inline int cuda_device_count() {
    int n = 0;
    const cudaError_t status = cudaGetDeviceCount(&n);
    if (status != cudaSuccess) (void)cudaGetLastError();
    return cuda_detail::usable_device_count(status, n, status == cudaSuccess || cuda_detail::nvidia_driver_installed());
}

/// Whether a usable GPU is present; throws as cuda_device_count where one is present but unusable.
inline bool cuda_available() { return cuda_device_count() > 0; }

/// The stream on which vediff runs all its work on the current device: kernels, copies, cuBLAS and
/// the caching allocator's reuse are ordered on it. It is non-blocking, so it does not synchronize
/// with the legacy default stream: work of one's own that touches vediff's tensors (a kernel, a
/// cudaMemcpyAsync, NCCL) must be enqueued on this stream, or ordered with it by a cuda_event.
inline cudaStream_t cuda_stream() { return cuda_detail::stream(); }

/// Blocks the host until everything vediff has queued on the current device has run.
/// Then reports an index found out of range by a check queued since the last read (shape_error).
inline void cuda_synchronize() {
    cuda_detail::synchronize();
    cuda_detail::raise_index_faults();
}

/// A point in a stream's work, for ordering one's own streams with vediff's: record it on one
/// stream, make another wait for it (on the device, the host not blocked), or wait on the host.
class cuda_event {
public:
    cuda_event() { cuda_detail::check(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreateWithFlags"); }
    ~cuda_event() {
        if (event_) (void)cudaEventDestroy(event_);
    }
    cuda_event(const cuda_event&) = delete;
    cuda_event& operator=(const cuda_event&) = delete;
    cuda_event(cuda_event&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
    cuda_event& operator=(cuda_event&& other) noexcept {
        std::swap(event_, other.event_);
        return *this;
    }

    /// Marks the work queued on `stream` so far (vediff's stream by default).
    void record(cudaStream_t stream = cuda_stream()) { cuda_detail::check(cudaEventRecord(event_, stream), "cudaEventRecord"); }
    /// Work queued on `stream` after this call runs after the recorded point.
    void make_wait(cudaStream_t stream = cuda_stream()) const {
        cuda_detail::check(cudaStreamWaitEvent(stream, event_, 0), "cudaStreamWaitEvent");
    }
    /// Blocks the host until the recorded point is reached.
    void synchronize() const { cuda_detail::check(cudaEventSynchronize(event_), "cudaEventSynchronize"); }
    cudaEvent_t get() const { return event_; }

private:
    cudaEvent_t event_ = nullptr;
};

/// TF32 tensor-core math for float matrix products (about 10 mantissa bits in the products):
/// Linear, attention and batched products. Off by default, as PyTorch's
/// torch.backends.cuda.matmul.allow_tf32, so that they match the cpu backend within float rounding.
inline void set_cuda_tf32(bool enabled) noexcept { cuda_detail::tf32_flag() = enabled; }
inline bool cuda_tf32() noexcept { return cuda_detail::tf32_flag(); }

/// TF32 math for the float convolutions (cuDNN's CUDNN_TENSOR_OP_MATH, else CUDNN_FMA_MATH; the
/// cuBLAS products of the 1×1 and im2col paths likewise). On by default, as PyTorch's
/// torch.backends.cudnn.allow_tf32; off to compare convolutions with the cpu backend at fp32
/// precision (the parity tests do).
inline void set_cuda_conv_tf32(bool enabled) noexcept { cuda_detail::conv_tf32_flag() = enabled; }
inline bool cuda_conv_tf32() noexcept { return cuda_detail::conv_tf32_flag(); }

/// Which of the two attention paths float attention takes (backend/cuda/attention.hpp): the fused
/// kernels (fused_attention.hpp: memory linear in the tokens, scalar FMAs), or cuBLAS's batched
/// products (tensor cores; one layer's (B, H, Nq, Nk) probabilities in memory at a time).
/// automatic, the default: fused where those probabilities would take fused_attention_from_bytes
/// or more, cuBLAS below. Heads wider than 128 and double always take cuBLAS.
enum class cuda_attention_path { automatic = 0, fused = 1, unfused = 2 };
inline void set_cuda_attention_path(cuda_attention_path path) noexcept { cuda_detail::attention_path_choice() = static_cast<int>(path); }
inline cuda_attention_path cuda_attention() noexcept { return static_cast<cuda_attention_path>(cuda_detail::attention_path_choice().load()); }

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
        if (cuda_device_count() == 0) throw cuda_error("no CUDA device on this machine (no GPU, or no NVIDIA driver installed)");
    }
};

} // namespace vediff
