#pragma once
// cuda kernels for the optimizers: the fused AdamW update (one pass over p, m, v, g, with the cpu
// backend's operation order), sums of squares for gradient norms (a model's gradients in one
// multi-tensor launch) and clipping by the global norm without the host (the norm and the factor
// stay on the device until asked for). The multi-tensor launches' tables are kept on the device by
// content (table_cache.hpp): a training step's lists are the same every step, uploaded once.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <span>
#include <vector>
#include <cstdint>

#include <thrust/execution_policy.h>
#include <thrust/for_each.h>
#include <thrust/functional.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/transform_reduce.h>

#include "vediff/backend/cuda/memory.hpp"
#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/backend/cuda/table_cache.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

namespace cuda_detail {

template <class T>
struct adamw_op {
    T *p, *m, *v;
    const T* g;
    T decay, b1, b2, c1, c2, eps, neg_step, bc2;
    __host__ __device__ void operator()(std::int64_t i) const {
        const T gi = g[i];
        const T mi = m[i] * b1 + gi * c1;
        const T vi = v[i] * b2 + c2 * gi * gi;
        const T denom = sqrt(vi) / bc2 + eps;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay + neg_step * mi / denom;
    }
};

template <class T>
struct square_in_double_op {
    __host__ __device__ double operator()(T x) const { return double(x) * double(x); }
};

/// A list of tensors cut into chunks of at most multi_tensor_chunk elements, in list order: how a
/// multi-tensor kernel spreads many tensors (a model's ~130 gradients) over one grid.
struct tensor_chunk {
    std::int64_t tensor, first, length;
};
inline constexpr std::int64_t multi_tensor_chunk = 32768;
inline constexpr int multi_tensor_threads = 256;

inline std::vector<tensor_chunk> chunk_tensors(std::span<const std::int64_t> lengths) {
    std::vector<tensor_chunk> chunks;
    for (std::size_t i = 0; i < lengths.size(); ++i)
        for (std::int64_t first = 0; first < lengths[i]; first += multi_tensor_chunk)
            chunks.push_back({static_cast<std::int64_t>(i), first, std::min(multi_tensor_chunk, lengths[i] - first)});
    return chunks;
}

/// Σ x² of one chunk as a block computes it: thread t takes elements t, t + threads, ... in
/// order, then a pairwise tree over the threads (the host replica of the kernel below).
#pragma nv_exec_check_disable
template <class T>
__host__ __device__ double chunk_thread_share(const T* x, std::int64_t length, int t, int threads) {
    double s = 0;
    for (std::int64_t j = t; j < length; j += threads) s += double(x[j]) * double(x[j]);
    return s;
}

/// partial[c] = Σ x² over chunk c, one block per chunk.
template <class T>
__global__ void __launch_bounds__(multi_tensor_threads)
    chunk_sum_of_squares_kernel(const T* const* tensors, const tensor_chunk* chunks, double* partial) {
    __shared__ double sums[multi_tensor_threads];
    const int t = static_cast<int>(threadIdx.x);
    const tensor_chunk c = chunks[blockIdx.x];
    sums[t] = chunk_thread_share(tensors[c.tensor] + c.first, c.length, t, multi_tensor_threads);
    __syncthreads();
    for (int half = multi_tensor_threads / 2; half > 0; half /= 2) {
        if (t < half) sums[t] += sums[t + half];
        __syncthreads();
    }
    if (t == 0) partial[blockIdx.x] = sums[0];
}

/// The kernel's result on the host, in its order: each chunk's tree, then the chunks in order.
template <class T>
double sum_of_squares_many_on_host(std::span<const T* const> tensors, std::span<const std::int64_t> lengths) {
    double total = 0;
    std::vector<double> sums(multi_tensor_threads);
    for (const auto& c : chunk_tensors(lengths)) {
        for (int t = 0; t < multi_tensor_threads; ++t)
            sums[static_cast<std::size_t>(t)] = chunk_thread_share(tensors[static_cast<std::size_t>(c.tensor)] + c.first, c.length, t,
                                                                  multi_tensor_threads);
        for (int half = multi_tensor_threads / 2; half > 0; half /= 2)
            for (int t = 0; t < half; ++t) sums[static_cast<std::size_t>(t)] += sums[static_cast<std::size_t>(t + half)];
        total += sums[0];
    }
    return total;
}

/// Page-locked host memory per device, kept and grown: the staging of small tables and results,
/// copied asynchronously (a pageable buffer would make every copy synchronous). One user at a time:
/// get() waits until the copies enqueued by the previous user (marked by done_after()) have run.
class pinned_staging {
public:
    /// At least `bytes` of pinned memory, free of copies in flight.
    static void* get(std::size_t bytes) {
        auto& slot = per_device_slot();
        if (slot.in_flight) {
            check(cudaEventSynchronize(slot.in_flight), "cudaEventSynchronize (staging)");
            check(cudaEventDestroy(slot.in_flight), "cudaEventDestroy (staging)");
            slot.in_flight = nullptr;
        }
        if (slot.bytes < bytes) {
            if (slot.data) (void)cudaFreeHost(slot.data);
            slot.data = nullptr;
            slot.bytes = 0;
            check(cudaMallocHost(&slot.data, bytes), "cudaMallocHost (staging)");
            slot.bytes = bytes;
        }
        return slot.data;
    }
    /// The buffer is in use by the copies enqueued on the backend's stream so far.
    static void done_after() {
        auto& slot = per_device_slot();
        check(cudaEventCreateWithFlags(&slot.in_flight, cudaEventDisableTiming), "cudaEventCreateWithFlags (staging)");
        check(cudaEventRecord(slot.in_flight, stream()), "cudaEventRecord (staging)");
    }

private:
    struct slot_type {
        void* data = nullptr;
        std::size_t bytes = 0;
        cudaEvent_t in_flight = nullptr;
    };
    static slot_type& per_device_slot() {
        static std::array<slot_type, max_devices> slots;
        return slots[static_cast<std::size_t>(current_device())];
    }
};

/// op(entry, i) for every element i of every entry (entry.n elements), a block per chunk.
template <class Entry, class Op>
__global__ void __launch_bounds__(multi_tensor_threads)
    multi_tensor_apply_kernel(const Entry* entries, const tensor_chunk* chunks, Op op) {
    const tensor_chunk c = chunks[blockIdx.x];
    const Entry e = entries[c.tensor];
    for (std::int64_t j = threadIdx.x; j < c.length; j += multi_tensor_threads) op(e, c.first + j);
}

/// The kernel's partition on the host: every element of every entry visited once, chunk by chunk.
template <class Entry, class Op>
void multi_tensor_apply_on_host(std::span<const Entry> entries, const Op& op) {
    std::vector<std::int64_t> lengths;
    for (const auto& e : entries) lengths.push_back(e.n);
    for (const auto& c : chunk_tensors(lengths))
        for (std::int64_t j = 0; j < c.length; ++j) op(entries[static_cast<std::size_t>(c.tensor)], c.first + j);
}

/// The device copy of a table (its bytes), uploaded through pinned staging the first time these
/// bytes are asked for and kept by content afterwards (content_cache, per device).
inline const std::byte* device_table(std::span<const std::byte> bytes) {
    // Kept for the process's life (never destroyed: its tensors would outlive the allocator).
    static auto* locks = new std::array<std::mutex, max_devices>;
    static auto* caches = new std::array<content_cache<tensor<double, cuda>>, max_devices>;
    const auto d = static_cast<std::size_t>(current_device());
    std::lock_guard lock((*locks)[d]);
    auto& cache = (*caches)[d];
    if (auto* found = cache.find(bytes)) return reinterpret_cast<const std::byte*>(found->data());
    auto* staging = static_cast<std::byte*>(pinned_staging::get(bytes.size()));
    std::memcpy(staging, bytes.data(), bytes.size());
    tensor<double, cuda> table(tensor_shape{static_cast<std::int64_t>((bytes.size() + 7) / 8)});
    check(cudaMemcpyAsync(table.data(), staging, bytes.size(), cudaMemcpyHostToDevice, stream()), "cudaMemcpyAsync (multi-tensor tables)");
    pinned_staging::done_after();
    return reinterpret_cast<const std::byte*>(cache.insert(bytes, std::move(table)).data());
}

/// A multi-tensor launch's two tables on the device: its entries, then (256-byte aligned) its chunks.
struct multi_tensor_tables {
    const std::byte* entries = nullptr;
    const tensor_chunk* chunks = nullptr;
    std::size_t chunk_count = 0;
};
template <class Entry>
multi_tensor_tables upload_tables(std::span<const Entry> entries, std::span<const std::int64_t> lengths) {
    const auto chunks = chunk_tensors(lengths);
    if (chunks.empty()) return {};
    const std::size_t entry_bytes = entries.size() * sizeof(Entry), chunk_offset = (entry_bytes + 255) / 256 * 256;
    std::vector<std::byte> host(chunk_offset + chunks.size() * sizeof(tensor_chunk));
    std::memcpy(host.data(), entries.data(), entry_bytes);
    std::memcpy(host.data() + chunk_offset, chunks.data(), chunks.size() * sizeof(tensor_chunk));
    const std::byte* device = device_table(host);
    return {device, reinterpret_cast<const tensor_chunk*>(device + chunk_offset), chunks.size()};
}

/// One launch of op over every element of the entries, on the backend's stream; nothing waits.
template <class Entry, class Op>
void multi_tensor_apply(std::span<const Entry> entries, const Op& op) {
    std::vector<std::int64_t> lengths;
    for (const auto& e : entries) lengths.push_back(e.n);
    const auto tables = upload_tables(entries, std::span<const std::int64_t>(lengths));
    if (tables.chunk_count == 0) return;
    multi_tensor_apply_kernel<<<static_cast<unsigned>(tables.chunk_count), multi_tensor_threads, 0, stream()>>>(
        reinterpret_cast<const Entry*>(tables.entries), tables.chunks, op);
    check(cudaGetLastError(), "multi_tensor_apply_kernel launch");
}

/// Σ x² of every chunk of the tensors, on the device (chunk order), in one launch.
template <class T>
tensor<double, cuda> chunk_sums_of_squares(std::span<const T* const> tensors, std::span<const std::int64_t> lengths) {
    const auto tables = upload_tables(tensors, lengths);
    tensor<double, cuda> partial(tensor_shape{static_cast<std::int64_t>(tables.chunk_count)});
    if (tables.chunk_count == 0) return partial;
    chunk_sum_of_squares_kernel<T><<<static_cast<unsigned>(tables.chunk_count), multi_tensor_threads, 0, stream()>>>(
        reinterpret_cast<const T* const*>(tables.entries), tables.chunks, partial.data());
    check(cudaGetLastError(), "chunk_sum_of_squares_kernel launch");
    return partial;
}

/// result = {norm, clip_factor(norm, max_norm)} with norm = √(Σ partial in order): the host's
/// arithmetic (the sum in chunk order, IEEE sqrt and division), on the device.
template <int = 0>
__global__ void clip_factor_kernel(const double* partial, std::int64_t chunks, double max_norm, double* result) {
    double total = 0;
    for (std::int64_t c = 0; c < chunks; ++c) total += partial[c];
    const double norm = sqrt(total);
    result[0] = norm;
    result[1] = clip_factor(norm, max_norm);
}

/// One tensor to scale in place.
template <class T>
struct scaled_tensor {
    T* x;
    std::int64_t n;
};

/// x ← factor·x when the factor (read on the device, result[1]) is below 1, as elementwise scale.
template <class T>
struct scale_by_clip_factor_op {
    const double* result;
    __host__ __device__ void operator()(const scaled_tensor<T>& e, std::int64_t i) const {
        const double factor = result[1];
        if (factor < 1.0) e.x[i] = T(factor) * e.x[i];
    }
};

/// AdamW on element i of one tensor: adamw_op's arithmetic.
template <class T>
struct adamw_entry_op {
    T decay, b1, b2, c1, c2, eps, neg_step, bc2;
    __host__ __device__ void operator()(const adamw_tensor<T>& e, std::int64_t i) const {
        adamw_op<T>{e.param, e.exp_avg, e.exp_avg_sq, e.grad, decay, b1, b2, c1, c2, eps, neg_step, bc2}(i);
    }
};

/// shadow += weight·(param − shadow), the difference rounded to T first.
template <class T>
struct ema_entry_op {
    T weight;
    __host__ __device__ void operator()(const ema_tensor<T>& e, std::int64_t i) const {
        const T difference = e.param[i] - e.shadow[i];
        e.shadow[i] = weight * difference + T(1) * e.shadow[i];
    }
};

} // namespace cuda_detail

template <>
struct optim_kernels<cuda> {
    /// adamw_update over a list of tensors in one launch (a model's ~130 tensors: one launch, not
    /// ~130), element by element the same arithmetic.
    template <class T>
    static void adamw_update_many(std::span<const adamw_tensor<T>> tensors, const adamw_scalars& s) {
        cuda_detail::multi_tensor_apply(tensors, cuda_detail::adamw_entry_op<T>{T(s.decay_factor), T(s.beta1), T(s.beta2), T(1 - s.beta1),
                                                                                 T(1 - s.beta2), T(s.eps), T(-s.step_size),
                                                                                 T(s.bias_correction2_sqrt)});
    }

    /// shadow += weight·(param − shadow) over a list of tensors in one launch.
    template <class T>
    static void ema_update_many(std::span<const ema_tensor<T>> tensors, T weight) {
        cuda_detail::multi_tensor_apply(tensors, cuda_detail::ema_entry_op<T>{weight});
    }

    /// p ← p·(1 − lr·wd); m ← β1·m + (1 − β1)·g; v ← β2·v + (1 − β2)·g²;
    /// p ← p − step_size·m / (√v / √(1 − β2^t) + eps), as optim_kernels<cpu>.
    template <class T>
    static void adamw_update(T* p, T* m, T* v, const T* g, std::int64_t n, const adamw_scalars& s) {
        if (n <= 0) return;
        const cuda_detail::adamw_op<T> op{p, m, v, g, T(s.decay_factor), T(s.beta1), T(s.beta2), T(1 - s.beta1), T(1 - s.beta2),
                                          T(s.eps), T(-s.step_size), T(s.bias_correction2_sqrt)};
        cuda_detail::thrust_call("thrust::for_each", [&] {
            return thrust::for_each(thrust::cuda::par_nosync.on(cuda_detail::stream()),
                                    thrust::counting_iterator<std::int64_t>(0), thrust::counting_iterator<std::int64_t>(n), op);
        });
    }

    /// Σ over the tensors of Σ x² in double, in one launch and one read-back (the gradient norm of
    /// a model: one wait for the stream instead of one per tensor). The per-chunk sums come back
    /// and are added on the host in chunk order (sum_of_squares_many_on_host gives the same number).
    template <class T>
    static double sum_of_squares_many(std::span<const T* const> tensors, std::span<const std::int64_t> lengths) {
        double total = 0;
        for (double p : cuda_detail::chunk_sums_of_squares(tensors, lengths).to_vector()) total += p;
        return total;
    }

    /// Scales the tensors by clip_factor(their global L2 norm, max_norm), as torch's
    /// clip_grad_norm_, without the host: the norm and the factor are computed on the device, and
    /// returned there as {norm, factor} (two doubles; read them when needed). Three launches.
    template <class T>
    static tensor<double, cuda> clip_by_global_norm_many(std::span<T* const> tensors, std::span<const std::int64_t> lengths,
                                                         double max_norm) {
        const std::vector<const T*> read(tensors.begin(), tensors.end());
        const auto partial = cuda_detail::chunk_sums_of_squares(std::span<const T* const>(read), lengths);
        tensor<double, cuda> result(tensor_shape{2});
        cuda_detail::clip_factor_kernel<><<<1, 1, 0, cuda_detail::stream()>>>(partial.data(), partial.numel(), max_norm, result.data());
        cuda_detail::check(cudaGetLastError(), "clip_factor_kernel launch");
        std::vector<cuda_detail::scaled_tensor<T>> entries;
        for (std::size_t i = 0; i < tensors.size(); ++i) entries.push_back({tensors[i], lengths[i]});
        cuda_detail::multi_tensor_apply(std::span<const cuda_detail::scaled_tensor<T>>(entries),
                                        cuda_detail::scale_by_clip_factor_op<T>{result.data()});
        return result;
    }

    /// Σ x² in double, returned to the host (waits for the stream). The device's summation order
    /// differs from the cpu's fixed chunks: equal within double rounding, not bit for bit.
    template <class T>
    static double sum_of_squares(const T* x, std::int64_t n) {
        if (n <= 0) return 0.0;
        return cuda_detail::thrust_call("thrust::transform_reduce", [&] {
            return thrust::transform_reduce(thrust::cuda::par.on(cuda_detail::stream()), x, x + n,
                                            cuda_detail::square_in_double_op<T>{}, 0.0, thrust::plus<double>());
        });
    }
};

} // namespace vediff
