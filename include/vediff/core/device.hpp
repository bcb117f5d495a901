#pragma once
// Device tags. The device is a type, never a runtime flag: every op has one backend per device,
// and a missing op is a compile error. Only backend/ knows where memory lives.
#include <concepts>

namespace vediff {

/// Host memory: Eigen for matrix products, OpenMP for parallel loops, 64-byte aligned storage.
struct cpu {
    static constexpr const char* name = "cpu";
    static constexpr bool host_accessible = true;
};

/// NVIDIA GPU memory (cuBLAS, Thrust and kernels; backend/cuda). Declared here so that layer and
/// model code stays device-generic. Named `cuda_device`, not `cuda`: CUDA's own headers (libcu++)
/// declare a global namespace `cuda`, and after `using namespace vediff;` an unqualified `cuda`
/// would name both. `vediff::cuda` stays as an alias, for qualified use and inside the library.
struct cuda_device {
    static constexpr const char* name = "cuda";
    static constexpr bool host_accessible = false;
};
using cuda = cuda_device;

template <class D>
concept device = requires {
    { D::name } -> std::convertible_to<const char*>;
    { D::host_accessible } -> std::convertible_to<bool>;
};

/// A run-time check that device D can be used here, for devices that may be absent (a GPU):
/// require_available() throws, saying why, when it cannot. Nothing to check by default; a backend
/// specializes it (backend/cuda/runtime.hpp), and jobs call it before they start on D.
template <class D>
struct device_check {
    static void require_available() {}
};

/// Which of a machine's devices of kind D this process uses: a data-parallel rank takes the one
/// of its local rank (one GPU per process). Nothing to select by default; the cuda backend
/// specializes it (cudaSetDevice), and trainers call it before their first tensor on D.
template <class D>
struct device_selection {
    static void use(int /*local_rank*/) {}
};

/// Memory management per device (allocate, release, fill, copy to and from the host).
/// Compute kernels live in one struct per op family, `<family>_kernels<D>`, declared by the
/// op header and specialized in backend/<device>/<family>.hpp.
template <device D>
struct memory;

} // namespace vediff
