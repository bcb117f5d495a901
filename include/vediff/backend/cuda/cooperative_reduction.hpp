#pragma once
// Reductions by cooperating threads, for the cuda backend's row-wise ops (softmax, the norms, the
// loss terms' block sums) and column sums (the norms' parameter gradients). One thread walking a
// whole row reads memory uncoalesced and leaves the device idle when rows are few and long
// (GroupNorm has one row per sample and group: 512 rows of 262144 values in an LDM tokenizer), so
// a block of threads shares each row, and a tile of threads each strip of columns.
//
// The op is a job; these kernels only partition it. A row job has
//   using accumulator = ...;   using row_result = ...;   (plain aggregates: they live in shared memory)
//   accumulator identity() const;
//   static accumulator combine(accumulator, accumulator);
//   std::int64_t reduce_length(row) const, map_length(row) const;
//   accumulator load(row, j) const;              called once for each j < reduce_length(row)
//   row_result finish(row, accumulator) const;   every thread of the row's block calls it; it may read
//                                                the row (all finish before any store)
//   void save(row, const row_result&) const;     once per row (the row's statistics)
//   void store(row, j, const row_result&) const; once for each j < map_length(row)
// and store runs after every load of its row, so a job may write the row it reads.
// A column job has accumulator, identity, combine, load(i, j) and finish(j, accumulator), which
// writes column j's result once.
//
// The order of combination depends on the sizes alone (thread t takes j ≡ t mod threads in order,
// then a pairwise tree over the threads; columns likewise in fixed row chunks and lanes), so the
// results do not depend on scheduling, and the *_on_host functions repeat that order exactly on
// the host: how the jobs are tested on machines without a GPU.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "vediff/backend/cuda/memory.hpp"
#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::cuda_detail {

inline constexpr int max_row_threads = 256;
inline constexpr std::int64_t max_row_blocks = std::int64_t{1} << 20;  // more rows loop (grid-stride)

/// Threads per row: a power of two from 32 to 256, about one for every 4 values of the longest row.
inline int row_threads(std::int64_t longest) {
    int threads = 32;
    while (threads < max_row_threads && std::int64_t{threads} * 4 < longest) threads *= 2;
    return threads;
}

/// Column reductions: tiles of 32 columns × 8 lanes of rows, each over a chunk of rows.
inline constexpr int column_tile = 32;
inline constexpr int column_lanes = 8;
inline constexpr std::int64_t max_column_chunks = 1024;

/// Rows per chunk: at least 256, and few enough chunks that the grid's y extent holds them.
inline std::int64_t column_chunk_rows(std::int64_t rows) {
    return std::max<std::int64_t>(256, (rows + max_column_chunks - 1) / max_column_chunks);
}

// nv_exec_check_disable: host-only jobs (tests) instantiate these on the host alone.
/// One thread's share of a row: j = t, t + threads, ... in order.
#pragma nv_exec_check_disable
template <class Job>
__host__ __device__ typename Job::accumulator thread_share(const Job& job, std::int64_t row, std::int64_t length, int t, int threads) {
    typename Job::accumulator a = job.identity();
    for (std::int64_t j = t; j < length; j += threads) a = Job::combine(a, job.load(row, j));
    return a;
}

template <class Job>
__global__ void __launch_bounds__(max_row_threads) reduce_rows_kernel(Job job, std::int64_t rows) {
    __shared__ typename Job::accumulator partial[max_row_threads];
    const int t = static_cast<int>(threadIdx.x), threads = static_cast<int>(blockDim.x);
    for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        partial[t] = thread_share(job, row, job.reduce_length(row), t, threads);
        __syncthreads();
        for (int half = threads / 2; half > 0; half /= 2) {
            if (t < half) partial[t] = Job::combine(partial[t], partial[t + half]);
            __syncthreads();
        }
        const typename Job::row_result result = job.finish(row, partial[0]);
        // Every thread's finish before any thread's store: a finish may read the row (group norm's
        // reads its shift, x[0] of the row), which an in-place store would already have overwritten.
        __syncthreads();
        if (t == 0) job.save(row, result);
        const std::int64_t length = job.map_length(row);
        for (std::int64_t j = t; j < length; j += threads) job.store(row, j, result);
        __syncthreads();  // every thread has read partial[0] before the next row overwrites it
    }
}

/// Runs a row job over rows [0, rows) on the device's stream; `longest`, the longest reduce or map
/// length, sizes the blocks.
template <class Job>
void reduce_rows(const Job& job, std::int64_t rows, std::int64_t longest) {
    if (rows <= 0) return;
    const auto blocks = static_cast<unsigned>(std::min(rows, max_row_blocks));
    reduce_rows_kernel<<<blocks, static_cast<unsigned>(row_threads(longest)), 0, stream()>>>(job, rows);
    check(cudaGetLastError(), "reduce_rows_kernel launch");
}

/// How reduce_rows_on_host orders a row's threads after the reduction: as the kernel does (every
/// thread's finish, a barrier, then the stores), or as it would without that barrier, one thread
/// at a time finishing and storing (a schedule the hardware may pick): the second exists so that
/// a test can show what the barrier protects.
enum class row_schedule { device, without_finish_barrier };

/// reduce_rows on the host, in the device's order of combination, each of a row's threads
/// finishing and storing its own elements j ≡ t (mod threads).
template <class Job>
void reduce_rows_on_host(const Job& job, std::int64_t rows, std::int64_t longest, row_schedule schedule = row_schedule::device) {
    const int threads = row_threads(longest);
    std::vector<typename Job::accumulator> partial(static_cast<std::size_t>(threads));
    std::vector<typename Job::row_result> results(static_cast<std::size_t>(threads));
    for (std::int64_t row = 0; row < rows; ++row) {
        for (int t = 0; t < threads; ++t) partial[static_cast<std::size_t>(t)] = thread_share(job, row, job.reduce_length(row), t, threads);
        for (int half = threads / 2; half > 0; half /= 2)
            for (int t = 0; t < half; ++t)
                partial[static_cast<std::size_t>(t)] =
                    Job::combine(partial[static_cast<std::size_t>(t)], partial[static_cast<std::size_t>(t + half)]);
        const std::int64_t length = job.map_length(row);
        const auto store_share = [&](int t) {
            for (std::int64_t j = t; j < length; j += threads) job.store(row, j, results[static_cast<std::size_t>(t)]);
        };
        if (schedule == row_schedule::device) {
            for (int t = 0; t < threads; ++t) results[static_cast<std::size_t>(t)] = job.finish(row, partial[0]);
            job.save(row, results[0]);
            for (int t = 0; t < threads; ++t) store_share(t);
        } else {
            for (int t = 0; t < threads; ++t) {
                results[static_cast<std::size_t>(t)] = job.finish(row, partial[0]);
                if (t == 0) job.save(row, results[0]);
                store_share(t);
            }
        }
    }
}

/// One lane's share of a column within a chunk of rows: i = first + lane, + lanes, ... in order.
#pragma nv_exec_check_disable
template <class Job>
__host__ __device__ typename Job::accumulator lane_share(const Job& job, std::int64_t j, std::int64_t first, std::int64_t last, int lane) {
    typename Job::accumulator a = job.identity();
    for (std::int64_t i = first + lane; i < last; i += column_lanes) a = Job::combine(a, job.load(i, j));
    return a;
}

/// partial[chunk · cols + j] = column j reduced over the chunk's rows.
template <class Job>
__global__ void __launch_bounds__(column_tile * column_lanes)
    column_partials_kernel(Job job, std::int64_t rows, std::int64_t cols, std::int64_t chunk_rows, typename Job::accumulator* partial) {
    __shared__ typename Job::accumulator tile[column_lanes][column_tile];
    const int x = static_cast<int>(threadIdx.x), lane = static_cast<int>(threadIdx.y);
    const std::int64_t j = std::int64_t{blockIdx.x} * column_tile + x, chunk = blockIdx.y;
    const std::int64_t first = chunk * chunk_rows, last = first + chunk_rows < rows ? first + chunk_rows : rows;
    tile[lane][x] = j < cols ? lane_share(job, j, first, last, lane) : job.identity();
    __syncthreads();
    for (int half = column_lanes / 2; half > 0; half /= 2) {
        if (lane < half) tile[lane][x] = Job::combine(tile[lane][x], tile[lane + half][x]);
        __syncthreads();
    }
    if (lane == 0 && j < cols) partial[chunk * cols + j] = tile[0][x];
}

/// Column j: the chunks' partials combined in chunk order, then the job's finish.
template <class Job>
struct finish_columns_op {
    Job job;
    const typename Job::accumulator* partial;
    std::int64_t cols, chunks;
#pragma nv_exec_check_disable
    __host__ __device__ void operator()(std::int64_t j) const {
        typename Job::accumulator a = job.identity();
        for (std::int64_t c = 0; c < chunks; ++c) a = Job::combine(a, partial[c * cols + j]);
        job.finish(j, a);
    }
};

/// Runs a column job over the columns of a (rows × cols) operand on the device's stream.
template <class Job>
void reduce_columns(const Job& job, std::int64_t rows, std::int64_t cols) {
    if (cols <= 0) return;
    const std::int64_t chunk_rows = column_chunk_rows(rows), chunks = std::max<std::int64_t>(1, (rows + chunk_rows - 1) / chunk_rows);
    tensor<typename Job::accumulator, cuda> partial(tensor_shape{chunks * cols});
    const dim3 grid(static_cast<unsigned>((cols + column_tile - 1) / column_tile), static_cast<unsigned>(chunks));
    column_partials_kernel<<<grid, dim3(column_tile, column_lanes), 0, stream()>>>(job, rows, cols, chunk_rows, partial.data());
    check(cudaGetLastError(), "column_partials_kernel launch");
    for_each_element(cols, finish_columns_op<Job>{job, partial.data(), cols, chunks});
}

/// reduce_columns on the host, in the device's order of combination.
template <class Job>
void reduce_columns_on_host(const Job& job, std::int64_t rows, std::int64_t cols) {
    const std::int64_t chunk_rows = column_chunk_rows(rows), chunks = std::max<std::int64_t>(1, (rows + chunk_rows - 1) / chunk_rows);
    std::vector<typename Job::accumulator> partial(static_cast<std::size_t>(chunks * cols));
    typename Job::accumulator tile[column_lanes];
    for (std::int64_t chunk = 0; chunk < chunks; ++chunk)
        for (std::int64_t j = 0; j < cols; ++j) {
            const std::int64_t first = chunk * chunk_rows, last = first + chunk_rows < rows ? first + chunk_rows : rows;
            for (int lane = 0; lane < column_lanes; ++lane) tile[lane] = lane_share(job, j, first, last, lane);
            for (int half = column_lanes / 2; half > 0; half /= 2)
                for (int lane = 0; lane < half; ++lane) tile[lane] = Job::combine(tile[lane], tile[lane + half]);
            partial[static_cast<std::size_t>(chunk * cols + j)] = tile[0];
        }
    const finish_columns_op<Job> finish{job, partial.data(), cols, chunks};
    for (std::int64_t j = 0; j < cols; ++j) finish(j);
}

} // namespace vediff::cuda_detail
