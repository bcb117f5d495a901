#pragma once
// cuda kernels for fused (flash-style) scaled dot-product attention: the (B, H, Nq, Nk) scores and
// probabilities are never written to memory. The forward keeps a running maximum and sum of
// exponentials per query row (rescaling its accumulated output when the maximum grows), and saves
// log Σ exp for the backward, like the unfused path (attention.hpp); the backward recomputes the
// probabilities from it, in two kernels with no atomics (so it is deterministic):
//   query rows: pass 1 sums D_i = Σ_j p_ij·dp_ij (dp = dO·Vᵀ), pass 2 accumulates dq_i;
//   key rows:   dv_j = Σ_i p_ij·dO_i and dk_j = Σ_i ds_ij·q_i, with ds = scale·p·(dp − D).
// One thread per row of its operand; the other operand's rows pass through shared memory in tiles
// of flash_tile rows, which every thread of the block reads (a broadcast). A row's vectors live in
// registers, up to MaxDim (64 or 128) features; larger heads take the unfused path.
//
// Why our own kernel rather than cuDNN's fused SDPA: cuDNN fuses attention for fp16/bf16 operands
// only, while vediff's attention is fp32 (and bf16_mixed keeps fp32 values, rounding only the
// products' operands, at the same points as the cpu backend: q, k, v, dO, the probabilities and
// ds). The kernel uses scalar fp32 FMAs, not tensor cores: what it buys over the cuBLAS path is
// memory that grows with N rather than N², not speed at short sequences.
//
// Every step of the kernel is a __host__ __device__ member of its functor, and fused_rows_on_host
// runs them in the kernel's order (every thread stages its share of a tile, then every thread
// consumes it), so the host tests check the arithmetic and the tiling.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <cuda_bf16.h>

#include <fmt/format.h>

#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/error.hpp"
#include "vediff/core/kernels.hpp"

// Unrolled on the device, so that a row's arrays stay in registers (indices known at compile time);
// the host compiler does not know the pragma.
#if defined(__CUDA_ARCH__)
#define VEDIFF_UNROLL _Pragma("unroll")
#else
#define VEDIFF_UNROLL
#endif

namespace vediff {

namespace cuda_detail {

inline constexpr int fused_attention_threads = 64;  // rows per block, one per thread
inline constexpr int flash_tile = 32;               // rows of the other operands per shared-memory tile

/// Element (token, feature) of one (batch, head) matrix of an attention operand.
struct fused_operand {
    std::int64_t batch_stride = 0, head_stride = 0, outer_stride = 0;
    bool channels_first = false;
    __host__ __device__ std::int64_t at(std::int64_t b, std::int64_t h, std::int64_t token, std::int64_t feature) const {
        return b * batch_stride + h * head_stride + (channels_first ? feature * outer_stride + token : token * outer_stride + feature);
    }
};

struct fused_params {
    std::int64_t heads = 0, queries = 0, keys = 0, key_dim = 0, value_dim = 0;
    fused_operand q, k, v, out;
    float scale = 1;
};

inline fused_params make_fused_params(const attention_layout& l, float scale, bool channels_first) {
    const auto op = [&](const attention_operand& o) {
        return fused_operand{o.batch_stride, o.head_stride, o.outer_stride, channels_first};
    };
    return {l.heads, l.queries, l.keys, l.key_dim, l.value_dim, op(l.q), op(l.k), op(l.v), op(l.out), scale};
}

/// x, or x rounded to bf16 (round to nearest even) under bf16_mixed.
template <bool Round>
__host__ __device__ inline float operand_value(float x) {
    if constexpr (Round)
        return __bfloat162float(__float2bfloat16_rn(x));
    else
        return x;
}

/// Σ_d a[d]·b[d] over MaxDim values in order, each step one fused multiply-add (the same arithmetic
/// on the host and the device); features past the operand's width are zero.
template <int MaxDim>
__host__ __device__ inline float fused_dot(const float* a, const float* b) {
    float s = 0.0f;
    VEDIFF_UNROLL
    for (int d = 0; d < MaxDim; ++d) s = fmaf(a[d], b[d], s);
    return s;
}

/// The probability p_ij = exp(scale·q·k − log_sum_i) and ds_ij = round(scale·p·(dp − D_i)), as both
/// backward kernels compute them (so that they agree bit for bit).
struct probability_and_ds {
    float p, ds;
};
template <bool Round, int MaxDim>
__host__ __device__ inline probability_and_ds backward_terms(const float* q, const float* k, const float* dout, const float* v,
                                                             float log_sum, float row_dot, float scale) {
    const float p = expf(scale * fused_dot<MaxDim>(q, k) - log_sum);
    const float dp = fused_dot<MaxDim>(dout, v);
    return {p, operand_value<Round>(scale * p * (dp - row_dot))};
}

/// Copies rows first … first + flash_tile − 1 of one (batch, head) matrix into a tile of
/// (flash_tile, MaxDim), rounded under Round, zero past the rows and past the width; thread t of
/// `threads` copies elements t, t + threads, … (consecutive features: coalesced tokens-major).
template <bool Round, int MaxDim>
__host__ __device__ inline void stage_rows(float* tile, const float* src, const fused_operand& o, std::int64_t b, std::int64_t h,
                                           std::int64_t first, std::int64_t rows, std::int64_t width, int t, int threads) {
    for (int e = t; e < flash_tile * MaxDim; e += threads) {
        const int j = e / MaxDim, d = e % MaxDim;
        tile[e] = first + j < rows && d < width ? operand_value<Round>(src[o.at(b, h, first + j, d)]) : 0.0f;
    }
}

/// One row of an operand into registers, rounded under Round, zero past the width (and for a thread
/// past the last row).
template <bool Round, int MaxDim>
__host__ __device__ inline void load_row(float* dst, const float* src, const fused_operand& o, std::int64_t b, std::int64_t h,
                                         std::int64_t row, std::int64_t rows, std::int64_t width) {
    VEDIFF_UNROLL
    for (int d = 0; d < MaxDim; ++d) dst[d] = row < rows && d < width ? operand_value<Round>(src[o.at(b, h, row, d)]) : 0.0f;
}

/// The forward: out (and log_sum per query row, unless null) from q, k, v. Rows: queries; tiles:
/// keys.
template <bool Round, int MaxDim>
struct fused_attention_forward {
    fused_params p;
    const float *q, *k, *v;
    float *out, *log_sum;

    static constexpr int passes = 1;
    static constexpr int shared_floats = 2 * flash_tile * MaxDim;  // a tile of k, then one of v
    struct row_state {
        float q[MaxDim], acc[MaxDim];
        float max, sum;  // the largest scale·q·k so far; Σ exp(scale·q·k − max)
    };
    __host__ __device__ std::int64_t rows() const { return p.queries; }
    __host__ __device__ std::int64_t tiled_rows() const { return p.keys; }

    __host__ __device__ void begin(row_state& s, std::int64_t pair, std::int64_t row) const {
        load_row<Round, MaxDim>(s.q, q, p.q, pair / p.heads, pair % p.heads, row, p.queries, p.key_dim);
        VEDIFF_UNROLL
        for (int d = 0; d < MaxDim; ++d) s.acc[d] = 0.0f;
        s.max = -INFINITY;
        s.sum = 0.0f;
    }
    __host__ __device__ void stage(float* shared, std::int64_t pair, std::int64_t first, int t, int threads) const {
        const std::int64_t b = pair / p.heads, h = pair % p.heads;
        stage_rows<Round, MaxDim>(shared, k, p.k, b, h, first, p.keys, p.key_dim, t, threads);
        stage_rows<Round, MaxDim>(shared + flash_tile * MaxDim, v, p.v, b, h, first, p.keys, p.value_dim, t, threads);
    }
    __host__ __device__ void consume(row_state& s, const float* shared, std::int64_t first, int) const {
        const float* k_tile = shared;
        const float* v_tile = shared + flash_tile * MaxDim;
        const std::int64_t count = p.keys - first < flash_tile ? p.keys - first : flash_tile;
        float score[flash_tile];
        float tile_max = -INFINITY;
        VEDIFF_UNROLL
        for (int j = 0; j < flash_tile; ++j) {
            score[j] = j < count ? p.scale * fused_dot<MaxDim>(s.q, k_tile + j * MaxDim) : -INFINITY;
            tile_max = fmaxf(tile_max, score[j]);
        }
        // Rescale what was summed against the old maximum (exp(−inf) = 0 on the first tile).
        const float new_max = fmaxf(s.max, tile_max);
        const float correction = expf(s.max - new_max);
        s.sum *= correction;
        VEDIFF_UNROLL
        for (int d = 0; d < MaxDim; ++d) s.acc[d] *= correction;
        VEDIFF_UNROLL
        for (int j = 0; j < flash_tile; ++j) {
            if (j >= count) break;
            const float e = expf(score[j] - new_max);
            s.sum += e;
            const float weight = operand_value<Round>(e);
            VEDIFF_UNROLL
            for (int d = 0; d < MaxDim; ++d) s.acc[d] = fmaf(weight, v_tile[j * MaxDim + d], s.acc[d]);
        }
        s.max = new_max;
    }
    __host__ __device__ void finish(const row_state& s, std::int64_t pair, std::int64_t row) const {
        if (row >= p.queries) return;
        const std::int64_t b = pair / p.heads, h = pair % p.heads;
        const float inverse = 1.0f / s.sum;
        VEDIFF_UNROLL
        for (int d = 0; d < MaxDim; ++d)
            if (d < p.value_dim) out[p.out.at(b, h, row, d)] = s.acc[d] * inverse;
        if (log_sum) log_sum[pair * p.queries + row] = s.max + logf(s.sum);
    }
};

/// The backward's query rows: D_i (row_dot, saved for the key rows' kernel) in pass 0, dq in pass
/// 1.
template <bool Round, int MaxDim>
struct fused_attention_backward_queries {
    fused_params p;
    const float *q, *k, *v, *dout, *log_sum;
    float *dq, *row_dot;

    static constexpr int passes = 2;
    static constexpr int shared_floats = 2 * flash_tile * MaxDim;  // k, v
    struct row_state {
        float q[MaxDim], dout[MaxDim], dq[MaxDim];
        float log_sum, row_dot;
    };
    __host__ __device__ std::int64_t rows() const { return p.queries; }
    __host__ __device__ std::int64_t tiled_rows() const { return p.keys; }

    __host__ __device__ void begin(row_state& s, std::int64_t pair, std::int64_t row) const {
        const std::int64_t b = pair / p.heads, h = pair % p.heads;
        load_row<Round, MaxDim>(s.q, q, p.q, b, h, row, p.queries, p.key_dim);
        load_row<Round, MaxDim>(s.dout, dout, p.out, b, h, row, p.queries, p.value_dim);
        VEDIFF_UNROLL
        for (int d = 0; d < MaxDim; ++d) s.dq[d] = 0.0f;
        s.log_sum = row < p.queries ? log_sum[pair * p.queries + row] : 0.0f;
        s.row_dot = 0.0f;
    }
    __host__ __device__ void stage(float* shared, std::int64_t pair, std::int64_t first, int t, int threads) const {
        const std::int64_t b = pair / p.heads, h = pair % p.heads;
        stage_rows<Round, MaxDim>(shared, k, p.k, b, h, first, p.keys, p.key_dim, t, threads);
        stage_rows<Round, MaxDim>(shared + flash_tile * MaxDim, v, p.v, b, h, first, p.keys, p.value_dim, t, threads);
    }
    __host__ __device__ void consume(row_state& s, const float* shared, std::int64_t first, int pass) const {
        const float* k_tile = shared;
        const float* v_tile = shared + flash_tile * MaxDim;
        const std::int64_t count = p.keys - first < flash_tile ? p.keys - first : flash_tile;
        for (int j = 0; j < count; ++j) {
            if (pass == 0) {  // D_i = Σ_j p_ij·dp_ij
                const float prob = expf(p.scale * fused_dot<MaxDim>(s.q, k_tile + j * MaxDim) - s.log_sum);
                s.row_dot = fmaf(prob, fused_dot<MaxDim>(s.dout, v_tile + j * MaxDim), s.row_dot);
            } else {  // dq_i += ds_ij·k_j
                const auto t =
                    backward_terms<Round, MaxDim>(s.q, k_tile + j * MaxDim, s.dout, v_tile + j * MaxDim, s.log_sum, s.row_dot, p.scale);
                VEDIFF_UNROLL
                for (int d = 0; d < MaxDim; ++d) s.dq[d] = fmaf(t.ds, k_tile[j * MaxDim + d], s.dq[d]);
            }
        }
    }
    __host__ __device__ void finish(const row_state& s, std::int64_t pair, std::int64_t row) const {
        if (row >= p.queries) return;
        const std::int64_t b = pair / p.heads, h = pair % p.heads;
        VEDIFF_UNROLL
        for (int d = 0; d < MaxDim; ++d)
            if (d < p.key_dim) dq[p.q.at(b, h, row, d)] = s.dq[d];
        row_dot[pair * p.queries + row] = s.row_dot;
    }
};

/// The backward's key rows: dk and dv, given the query rows' D_i. Rows: keys; tiles: queries.
template <bool Round, int MaxDim>
struct fused_attention_backward_keys {
    fused_params p;
    const float *q, *k, *v, *dout, *log_sum, *row_dot;
    float *dk, *dv;

    static constexpr int passes = 1;
    // q, dO, then each query's log_sum and D
    static constexpr int shared_floats = 2 * flash_tile * MaxDim + 2 * flash_tile;
    struct row_state {
        float k[MaxDim], v[MaxDim], dk[MaxDim], dv[MaxDim];
    };
    __host__ __device__ std::int64_t rows() const { return p.keys; }
    __host__ __device__ std::int64_t tiled_rows() const { return p.queries; }

    __host__ __device__ void begin(row_state& s, std::int64_t pair, std::int64_t row) const {
        const std::int64_t b = pair / p.heads, h = pair % p.heads;
        load_row<Round, MaxDim>(s.k, k, p.k, b, h, row, p.keys, p.key_dim);
        load_row<Round, MaxDim>(s.v, v, p.v, b, h, row, p.keys, p.value_dim);
        VEDIFF_UNROLL
        for (int d = 0; d < MaxDim; ++d) s.dk[d] = s.dv[d] = 0.0f;
    }
    __host__ __device__ void stage(float* shared, std::int64_t pair, std::int64_t first, int t, int threads) const {
        const std::int64_t b = pair / p.heads, h = pair % p.heads;
        stage_rows<Round, MaxDim>(shared, q, p.q, b, h, first, p.queries, p.key_dim, t, threads);
        stage_rows<Round, MaxDim>(shared + flash_tile * MaxDim, dout, p.out, b, h, first, p.queries, p.value_dim, t, threads);
        float* stats = shared + 2 * flash_tile * MaxDim;
        for (int i = t; i < flash_tile; i += threads) {
            const bool inside = first + i < p.queries;
            stats[i] = inside ? log_sum[pair * p.queries + first + i] : 0.0f;
            stats[flash_tile + i] = inside ? row_dot[pair * p.queries + first + i] : 0.0f;
        }
    }
    __host__ __device__ void consume(row_state& s, const float* shared, std::int64_t first, int) const {
        const float* q_tile = shared;
        const float* dout_tile = shared + flash_tile * MaxDim;
        const float* stats = shared + 2 * flash_tile * MaxDim;
        const std::int64_t count = p.queries - first < flash_tile ? p.queries - first : flash_tile;
        for (int i = 0; i < count; ++i) {
            const float* qi = q_tile + i * MaxDim;
            const float* dOi = dout_tile + i * MaxDim;
            const auto t = backward_terms<Round, MaxDim>(qi, s.k, dOi, s.v, stats[i], stats[flash_tile + i], p.scale);
            const float weight = operand_value<Round>(t.p);
            VEDIFF_UNROLL
            for (int d = 0; d < MaxDim; ++d) {
                s.dv[d] = fmaf(weight, dOi[d], s.dv[d]);
                s.dk[d] = fmaf(t.ds, qi[d], s.dk[d]);
            }
        }
    }
    __host__ __device__ void finish(const row_state& s, std::int64_t pair, std::int64_t row) const {
        if (row >= p.keys) return;
        const std::int64_t b = pair / p.heads, h = pair % p.heads;
        VEDIFF_UNROLL
        for (int d = 0; d < MaxDim; ++d) {
            if (d < p.key_dim) dk[p.k.at(b, h, row, d)] = s.dk[d];
            if (d < p.value_dim) dv[p.v.at(b, h, row, d)] = s.dv[d];
        }
    }
};

/// Blocks of one (batch, head) pair: ⌈rows / fused_attention_threads⌉.
inline std::int64_t fused_row_blocks(std::int64_t rows) { return (rows + fused_attention_threads - 1) / fused_attention_threads; }

/// Block → (pair, block of rows); thread → row. Every thread of a block takes part in staging each
/// tile, including those past the last row.
template <class Fused>
__global__ void __launch_bounds__(fused_attention_threads) fused_rows_kernel(Fused f, std::int64_t row_blocks) {
    __shared__ float shared[Fused::shared_floats];
    const std::int64_t pair = blockIdx.x / row_blocks;
    const std::int64_t row = (blockIdx.x % row_blocks) * fused_attention_threads + threadIdx.x;
    typename Fused::row_state s;
    f.begin(s, pair, row);
    for (int pass = 0; pass < Fused::passes; ++pass) {
        for (std::int64_t first = 0; first < f.tiled_rows(); first += flash_tile) {
            __syncthreads();  // the previous tile has been read by every thread
            f.stage(shared, pair, first, threadIdx.x, fused_attention_threads);
            __syncthreads();
            f.consume(s, shared, first, pass);
        }
    }
    f.finish(s, pair, row);
}

/// Runs a fused functor on the device's stream over `pairs` (batch, head) pairs.
struct fused_rows_on_device {
    template <class Fused>
    void operator()(const Fused& f, std::int64_t pairs) const {
        const std::int64_t row_blocks = fused_row_blocks(f.rows()), blocks = pairs * row_blocks;
        if (blocks <= 0) return;
        if (blocks > 0x7fffffff)
            throw shape_error(fmt::format(fmt::runtime("fused attention: {} blocks exceed the grid's limit (2^31 − 1)"), blocks));
        fused_rows_kernel<<<static_cast<unsigned>(blocks), fused_attention_threads, 0, stream()>>>(f, row_blocks);
        check(cudaGetLastError(), "the fused attention kernel's launch");
    }
};

/// The same steps on the host, in the kernel's order: for each block and tile, every thread stages
/// its share, then every thread consumes the tile.
struct fused_rows_on_host {
    template <class Fused>
    void operator()(const Fused& f, std::int64_t pairs) const {
        const std::int64_t row_blocks = fused_row_blocks(f.rows());
        std::vector<float> shared(Fused::shared_floats);
        std::vector<typename Fused::row_state> states(fused_attention_threads);
        for (std::int64_t block = 0; block < pairs * row_blocks; ++block) {
            const std::int64_t pair = block / row_blocks, first_row = (block % row_blocks) * fused_attention_threads;
            for (int t = 0; t < fused_attention_threads; ++t) f.begin(states[t], pair, first_row + t);
            for (int pass = 0; pass < Fused::passes; ++pass) {
                for (std::int64_t first = 0; first < f.tiled_rows(); first += flash_tile) {
                    for (int t = 0; t < fused_attention_threads; ++t) f.stage(shared.data(), pair, first, t, fused_attention_threads);
                    for (int t = 0; t < fused_attention_threads; ++t) f.consume(states[t], shared.data(), first, pass);
                }
            }
            for (int t = 0; t < fused_attention_threads; ++t) f.finish(states[t], pair, first_row + t);
        }
    }
};

/// The widest head the fused kernels keep in registers.
inline constexpr std::int64_t fused_attention_max_dim = 128;

/// Whether the fused kernels take this call: float, at least one key, heads up to
/// fused_attention_max_dim wide.
inline bool fused_attention_fits(const attention_layout& l) {
    return l.keys > 0 && l.queries > 0 && std::max(l.key_dim, l.value_dim) <= fused_attention_max_dim;
}

/// Calls f with the register width (std::integral_constant<int, 64 or 128>) the layout needs.
template <class F>
void with_fused_width(const attention_layout& l, F&& f) {
    if (std::max(l.key_dim, l.value_dim) <= 64)
        f(std::integral_constant<int, 64>{});
    else
        f(std::integral_constant<int, 128>{});
}

/// out and log_sum (B·H·Nq, or null) of attention, by the fused forward, run by `run`
/// (fused_rows_on_device or fused_rows_on_host).
template <bool Round, class Run>
void fused_attention_forward_run(const Run& run, float* out, float* log_sum, const float* q, const float* k, const float* v,
                                 const attention_layout& l, float scale, bool channels_first) {
    const fused_params p = make_fused_params(l, scale, channels_first);
    with_fused_width(l, [&](auto width) {
        run(fused_attention_forward<Round, decltype(width)::value>{p, q, k, v, out, log_sum}, l.batch * l.heads);
    });
}

/// dq, dk, dv (written, not accumulated) by the fused backward; row_dot: scratch of B·H·Nq floats.
template <bool Round, class Run>
void fused_attention_backward_run(const Run& run, float* dq, float* dk, float* dv, float* row_dot, const float* dout, const float* q,
                                  const float* k, const float* v, const float* log_sum, const attention_layout& l, float scale,
                                  bool channels_first) {
    const fused_params p = make_fused_params(l, scale, channels_first);
    with_fused_width(l, [&](auto width) {
        constexpr int W = decltype(width)::value;
        run(fused_attention_backward_queries<Round, W>{p, q, k, v, dout, log_sum, dq, row_dot}, l.batch * l.heads);
        run(fused_attention_backward_keys<Round, W>{p, q, k, v, dout, log_sum, row_dot, dk, dv}, l.batch * l.heads);
    });
}

} // namespace cuda_detail

} // namespace vediff
