#pragma once
// Data-parallel training over a communicator (distributed/communicator.hpp): every rank holds the
// whole model, trains on its shard of each global batch (batch_shard), and averages the gradients
// before the optimizer step, so the ranks' parameters stay equal and the update is the one of
// the global batch (up to the order of the floating-point sums).
//
// Gradients travel in buckets, as PyTorch DDP's: the trainable parameters in reverse
// registration order (the order backward finishes them), packed into flat buffers of about
// bucket_bytes (25 MiB by default), one all-reduce per bucket. With single_process every call is
// a no-op and nothing is allocated.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/random.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/distributed/communicator.hpp"
#include "vediff/nn/layer.hpp"

namespace vediff::distributed {

inline constexpr std::size_t default_bucket_bytes = std::size_t{25} << 20;

/// Where one parameter's gradient lies in the buckets.
struct bucket_slot {
    std::size_t bucket = 0;
    std::size_t offset = 0;  // elements into the bucket
    std::size_t size = 0;    // elements
};

/// The bucket layout of parameters of the given sizes (in registration order): reverse order,
/// a new bucket whenever adding the next gradient would pass `bucket_elements` (a gradient larger
/// than that gets a bucket of its own). Returns each parameter's slot, in registration order.
inline std::vector<bucket_slot> plan_buckets(std::span<const std::size_t> sizes, std::size_t bucket_elements) {
    std::vector<bucket_slot> slots(sizes.size());
    std::size_t bucket = 0, filled = 0;
    for (std::size_t k = sizes.size(); k-- > 0;) {
        if (filled > 0 && filled + sizes[k] > bucket_elements) {
            ++bucket;
            filled = 0;
        }
        slots[k] = {bucket, filled, sizes[k]};
        filled += sizes[k];
    }
    return slots;
}

template <class Comm, class Model>
class data_parallel {
public:
    using value_type = typename Model::value_type;
    using device_type = typename Model::device_type;

    data_parallel(Comm& comm, Model& model, std::size_t bucket_bytes = default_bucket_bytes) : comm_(comm) {
        if constexpr (Comm::is_distributed) {
            if (bucket_bytes < sizeof(value_type))
                throw std::invalid_argument(fmt::format("data_parallel: bucket size {} bytes holds no gradient", bucket_bytes));
            std::vector<std::size_t> sizes;
            visit_trainable(model, [&](nn::parameter<value_type, device_type>& p) { sizes.push_back(static_cast<std::size_t>(p.grad.numel())); });
            slots_ = plan_buckets(sizes, bucket_bytes / sizeof(value_type));
            std::vector<std::size_t> elements;
            for (const auto& s : slots_) {
                if (elements.size() <= s.bucket) elements.resize(s.bucket + 1, 0);
                elements[s.bucket] += s.size;
            }
            for (auto n : elements) buckets_.emplace_back(tensor_shape{static_cast<std::int64_t>(n)});
            if constexpr (!device_type::host_accessible)
                for (auto n : elements) staging_.emplace_back(n);
        }
    }

    Comm& comm() { return comm_; }
    int rank() const { return comm_.rank(); }
    int size() const { return comm_.size(); }
    bool is_root() const { return comm_.rank() == 0; }
    /// This rank's share of each global batch and of each batch-shaped random draw.
    batch_shard shard() const { return {static_cast<std::uint64_t>(comm_.rank()), static_cast<std::uint64_t>(comm_.size())}; }
    std::size_t bucket_count() const { return buckets_.size(); }
    const std::vector<bucket_slot>& slots() const { return slots_; }

    /// Rank 0's parameters (trainable or not) on every rank: ranks that start from their own
    /// initialization (or a checkpoint only rank 0 read) then agree.
    void broadcast_parameters(Model& model) {
        if constexpr (Comm::is_distributed) {
            model.for_each_parameter([&](const std::string& name, nn::parameter<value_type, device_type>& p) {
                on_host(p.value.data(), static_cast<std::size_t>(p.value.numel()), [&](value_type* data, std::size_t n) {
                    comm_.broadcast(data, n, 0, name);
                });
            }, std::string{});
        }
    }

    /// The mean over ranks of every trainable gradient, in place (call after backward, before
    /// clipping and the optimizer). `step` names the step in a timeout's message.
    void reduce_gradients(Model& model, std::int64_t step) {
        if constexpr (Comm::is_distributed) {
            if (comm_.size() == 1) return;  // mpirun -np 1: nothing to average
            comm_.arrive(fmt::format("the gradient all-reduce of step {}", step));
            const auto bytes = sizeof(value_type);
            std::size_t k = 0;
            visit_trainable(model, [&](nn::parameter<value_type, device_type>& p) {
                const auto& s = slots_[k++];
                memory<device_type>::copy(buckets_[s.bucket].data() + s.offset, p.grad.data(), s.size * bytes);
            });
            const value_type inverse = value_type(1) / value_type(comm_.size());
            for (std::size_t b = 0; b < buckets_.size(); ++b) {
                auto& bucket = buckets_[b];
                on_host(bucket.data(), static_cast<std::size_t>(bucket.numel()), [&](value_type* data, std::size_t n) {
                    comm_.all_reduce_sum(data, n, fmt::format("gradient bucket {} of step {}", b, step));
                }, b);
                elementwise_kernels<device_type>::scale(bucket.data(), bucket.data(), inverse, bucket.numel());
            }
            k = 0;
            visit_trainable(model, [&](nn::parameter<value_type, device_type>& p) {
                const auto& s = slots_[k++];
                memory<device_type>::copy(p.grad.data(), buckets_[s.bucket].data() + s.offset, s.size * bytes);
            });
        }
    }

    /// The mean over ranks of each value (a step's loss terms, for the log).
    std::vector<double> mean(std::vector<double> values, std::string_view what) {
        if constexpr (Comm::is_distributed) {
            if (comm_.size() == 1) return values;
            comm_.arrive(fmt::format("the all-reduce of {}", what));
            comm_.all_reduce_sum(values.data(), values.size(), what);
            for (auto& v : values) v /= double(comm_.size());
        }
        return values;
    }
    double mean(double value, std::string_view what) { return mean(std::vector<double>{value}, what)[0]; }

private:
    template <class F>
    static void visit_trainable(Model& model, F&& f) {
        model.for_each_parameter([&](const std::string&, nn::parameter<value_type, device_type>& p) {
            if (p.trainable) f(p);
        }, std::string{});
    }

    // f(host pointer, n) over data of the model's device: itself on the host, else staged
    // through a host copy (MPI takes host memory).
    template <class F>
    void on_host(value_type* data, std::size_t n, F&& f, std::size_t staging_index = ~std::size_t{0}) {
        if constexpr (device_type::host_accessible) {
            f(data, n);
        } else {
            std::vector<value_type> scratch;
            auto& host = staging_index < staging_.size() ? staging_[staging_index] : scratch;
            host.resize(n);
            memory<device_type>::copy_to_host(host.data(), data, n * sizeof(value_type));
            f(host.data(), n);
            memory<device_type>::copy_from_host(data, host.data(), n * sizeof(value_type));
        }
    }

    Comm& comm_;
    std::vector<bucket_slot> slots_;
    std::vector<tensor<value_type, device_type>> buckets_;
    std::vector<std::vector<value_type>> staging_;
};

} // namespace vediff::distributed
