#pragma once
// Data-parallel training over a communicator (distributed/communicator.hpp): every rank holds the
// whole model, trains on its shard of each global batch (batch_shard), and averages the gradients
// before the optimizer step, so the ranks' parameters stay equal and the update is the one of
// the global batch (up to the order of the floating-point sums).
//
// Gradients travel in buckets, as PyTorch DDP's: the trainable parameters in reverse
// registration order (about the order backward finishes them), packed into flat buffers of about
// bucket_bytes (25 MiB by default), one all-reduce per bucket. A bucket is sent as soon as
// backward has announced all its gradients final (nn/gradient_listener.hpp), so its
// communication overlaps the rest of backward; reduce_gradients sends what is left and waits.
// With single_process every call is a no-op and nothing is allocated.
#include <cstddef>
#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/random.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/distributed/communicator.hpp"
#include "vediff/nn/gradient_listener.hpp"
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

namespace detail {
template <class Comm>
struct request_of {
    using type = int;  // single_process: nothing is ever in flight
};
template <class Comm>
    requires requires { typename Comm::request; }
struct request_of<Comm> {
    using type = typename Comm::request;
};
} // namespace detail

/// Whether Comm takes buffers of device D as they are (the host, or cuda for NCCL); otherwise
/// data_parallel stages them through host copies (MPI reads host memory).
template <class Comm, class D>
constexpr bool takes_memory_of() {
    if constexpr (D::host_accessible) return true;
    else if constexpr (requires { Comm::template takes_memory_of<D>; }) return Comm::template takes_memory_of<D>;
    else return false;
}

/// Whether data_parallel overlaps the bucket all-reduces with backward unless told: where the
/// communicator says (Comm::overlaps_backward), else not. NCCL moves data on the GPU while
/// backward's kernels run; MPI over shared memory on busy CPU cores measured slower with overlap
/// (its copies and sums take the cores backward needs, and it progresses only inside MPI calls:
/// docs/benchmarks.md).
template <class Comm>
constexpr bool overlaps_backward_by_default() {
    if constexpr (requires { Comm::overlaps_backward; }) return Comm::overlaps_backward;
    else return false;
}

/// What the last step's gradient reduction cost the step: the time reduce_gradients took (the
/// communication backward did not hide, plus packing), and how many buckets backward started.
struct reduction_timing {
    double exposed_seconds = 0;
    std::size_t buckets = 0;
    std::size_t started_during_backward = 0;
};

template <class Comm, class Model>
class data_parallel final : private nn::gradient_listener {
public:
    using value_type = typename Model::value_type;
    using device_type = typename Model::device_type;
    /// Buckets go to the communicator as they are, without host staging.
    static constexpr bool direct = takes_memory_of<Comm, device_type>();

    /// overlap: all-reduce each bucket as soon as backward announces its gradients final
    /// (between begin_backward and reduce_gradients); without it every bucket waits for
    /// reduce_gradients. The result is the same bit for bit: only when a bucket starts differs.
    data_parallel(Comm& comm, Model& model, std::size_t bucket_bytes = default_bucket_bytes,
                  bool overlap = overlaps_backward_by_default<Comm>())
        : comm_(comm), overlap_(overlap) {
        if constexpr (Comm::is_distributed) {
            if (bucket_bytes < sizeof(value_type))
                throw std::invalid_argument(fmt::format("data_parallel: bucket size {} bytes holds no gradient", bucket_bytes));
            std::vector<std::size_t> sizes;
            visit_trainable(model, [&](nn::parameter<value_type, device_type>& p) { sizes.push_back(static_cast<std::size_t>(p.grad.numel())); });
            slots_ = plan_buckets(sizes, bucket_bytes / sizeof(value_type));
            std::vector<std::size_t> elements;
            for (std::size_t k = 0; k < slots_.size(); ++k) {
                const auto& s = slots_[k];
                if (elements.size() <= s.bucket) {
                    elements.resize(s.bucket + 1, 0);
                    members_.resize(s.bucket + 1);
                }
                elements[s.bucket] += s.size;
                members_[s.bucket].push_back(k);
            }
            for (auto n : elements) buckets_.emplace_back(tensor_shape{static_cast<std::int64_t>(n)});
            if constexpr (!direct)
                for (auto n : elements) staging_.emplace_back(n);
            final_.resize(slots_.size());
            requests_.resize(buckets_.size());
        }
    }
    data_parallel(const data_parallel&) = delete;  // the listener of backward is this object
    data_parallel& operator=(const data_parallel&) = delete;

    Comm& comm() { return comm_; }
    int rank() const { return comm_.rank(); }
    int size() const { return comm_.size(); }
    bool is_root() const { return comm_.rank() == 0; }
    /// This rank's share of each global batch and of each batch-shaped random draw.
    batch_shard shard() const { return {static_cast<std::uint64_t>(comm_.rank()), static_cast<std::uint64_t>(comm_.size())}; }
    std::size_t bucket_count() const { return buckets_.size(); }
    const std::vector<bucket_slot>& slots() const { return slots_; }
    bool overlaps() const { return overlap_; }
    const reduction_timing& last_reduction() const { return timing_; }

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

    /// Call right before the step's backward: from here until reduce_gradients, each bucket is
    /// all-reduced as soon as backward has announced all its gradients final
    /// (nn::announce_final_gradients), while the rest of backward runs. With gradient
    /// accumulation, call it before the last micro-batch's backward only: a layer announced twice
    /// is an error. Also the step's check-in: a rank that does not come is named here.
    void begin_backward(Model& model, std::int64_t step) {
        if constexpr (Comm::is_distributed) {
            if (comm_.size() == 1 || in_step_) return;
            comm_.arrive(fmt::format("the backward of step {}", step));
            step_ = step;
            params_.clear();
            index_of_.clear();
            visit_trainable(model, [&](nn::parameter<value_type, device_type>& p) {
                index_of_.emplace(static_cast<const void*>(&p), params_.size());
                params_.push_back(&p);
            });
            if (params_.size() != slots_.size())
                throw std::logic_error(fmt::format("data_parallel: the model has {} trainable parameters, the buckets were planned for {}",
                                                   params_.size(), slots_.size()));
            std::fill(final_.begin(), final_.end(), char{0});
            missing_.assign(members_.size(), 0);
            for (std::size_t b = 0; b < members_.size(); ++b) missing_[b] = members_[b].size();
            started_.assign(buckets_.size(), char{0});
            done_.assign(buckets_.size(), char{0});
            order_.clear();
            timing_ = reduction_timing{};
            timing_.buckets = buckets_.size();
            in_step_ = true;
            if (overlap_) listener_.emplace(static_cast<nn::gradient_listener*>(this));
        }
    }

    /// The mean over ranks of every trainable gradient, in place (call after backward, before
    /// clipping and the optimizer): starts the buckets backward did not, and waits for all.
    /// `step` names the step in a timeout's message.
    void reduce_gradients(Model& model, std::int64_t step) {
        if constexpr (Comm::is_distributed) {
            if (comm_.size() == 1) return;  // mpirun -np 1: nothing to average
            if (!in_step_) begin_backward(model, step);
            listener_.reset();
            const auto started = std::chrono::steady_clock::now();
            // The buckets sent during backward first, then the others one at a time: several
            // 25 MiB all-reduces in flight together measured 6× slower over shared memory than
            // the same sent in turn (docs/benchmarks.md).
            const std::vector<std::size_t> in_flight = order_;
            for (const auto b : in_flight) finish_bucket(b);
            for (std::size_t b = 0; b < buckets_.size(); ++b)
                if (!started_[b]) {
                    start_bucket(b);
                    finish_bucket(b);
                }
            timing_.exposed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
            in_step_ = false;
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
    void gradient_final(const void* parameter) override {
        const auto it = index_of_.find(parameter);
        if (it == index_of_.end()) return;  // not this model's (or a fixed) parameter
        const auto k = it->second;
        if (final_[k])
            throw std::logic_error(fmt::format(
                "data_parallel: a parameter's gradient was announced final twice in the backward of step {}: its layer ran backward "
                "twice (shared weights, or gradient accumulation: call begin_backward before the last backward only)",
                step_));
        final_[k] = 1;
        --missing_[slots_[k].bucket];
    }

    void layer_done() override {
        if constexpr (Comm::is_distributed) {
            // MPI moves non-blocking collectives on only inside its calls: test those in flight.
            for (const auto b : order_)
                if (!done_[b]) done_[b] = comm_.test(requests_[b]);
            // Then start at most one bucket per announced layer, the lowest-numbered ready one.
            // The choice depends on the announcements alone, never on timing (whether a test
            // said done): every rank must start the same collectives in the same order, or MPI
            // matches one rank's bucket with another's (a truncation error, seen when the choice
            // waited for completions). One per layer spaces the buckets out: several large
            // all-reduces in flight together thrash shared memory (docs/benchmarks.md).
            for (std::size_t b = 0; b < buckets_.size(); ++b)
                if (!started_[b] && missing_[b] == 0) {
                    start_bucket(b);
                    ++timing_.started_during_backward;
                    break;
                }
        }
    }

    // Waits for bucket b's all-reduce and hands the means back to the gradients.
    void finish_bucket(std::size_t b)
        requires Comm::is_distributed
    {
        comm_.wait(requests_[b]);
        auto& bucket = buckets_[b];
        if constexpr (!direct)
            memory<device_type>::copy_from_host(bucket.data(), staging_[b].data(), staging_[b].size() * sizeof(value_type));
        elementwise_kernels<device_type>::scale(bucket.data(), bucket.data(), value_type(1) / value_type(comm_.size()), bucket.numel());
        for (const auto k : members_[b])
            memory<device_type>::copy(params_[k]->grad.data(), bucket.data() + slots_[k].offset, slots_[k].size * sizeof(value_type));
    }

    // Packs bucket b's gradients and starts its all-reduce (on the host copy for a device MPI
    // cannot read).
    void start_bucket(std::size_t b)
        requires Comm::is_distributed
    {
        auto& bucket = buckets_[b];
        for (const auto k : members_[b])
            memory<device_type>::copy(bucket.data() + slots_[k].offset, params_[k]->grad.data(), slots_[k].size * sizeof(value_type));
        value_type* data = bucket.data();
        if constexpr (!direct) {
            memory<device_type>::copy_to_host(staging_[b].data(), bucket.data(), staging_[b].size() * sizeof(value_type));
            data = staging_[b].data();
        }
        requests_[b] = comm_.start_all_reduce_sum(data, static_cast<std::size_t>(bucket.numel()),
                                                  fmt::format("gradient bucket {} of step {}", b, step_));
        started_[b] = 1;
        order_.push_back(b);
    }

    template <class F>
    static void visit_trainable(Model& model, F&& f) {
        model.for_each_parameter([&](const std::string&, nn::parameter<value_type, device_type>& p) {
            if (p.trainable) f(p);
        }, std::string{});
    }

    // f(host pointer, n) over data of the model's device: itself on the host, else staged
    // through a host copy (MPI takes host memory).
    template <class F>
    void on_host(value_type* data, std::size_t n, F&& f) {
        if constexpr (direct) {
            f(data, n);
        } else {
            std::vector<value_type> host(n);
            memory<device_type>::copy_to_host(host.data(), data, n * sizeof(value_type));
            f(host.data(), n);
            memory<device_type>::copy_from_host(data, host.data(), n * sizeof(value_type));
        }
    }

    Comm& comm_;
    bool overlap_;
    std::vector<bucket_slot> slots_;                 // per trainable parameter, registration order
    std::vector<std::vector<std::size_t>> members_;  // per bucket: its parameters
    std::vector<tensor<value_type, device_type>> buckets_;
    std::vector<std::vector<value_type>> staging_;   // host copies of the buckets (devices MPI cannot read)

    // The step in progress (begin_backward … reduce_gradients).
    bool in_step_ = false;
    std::int64_t step_ = 0;
    std::vector<nn::parameter<value_type, device_type>*> params_;
    std::unordered_map<const void*, std::size_t> index_of_;
    std::vector<char> final_;          // per parameter: announced
    std::vector<std::size_t> missing_; // per bucket: parameters not yet announced
    std::vector<char> started_;        // per bucket
    std::vector<char> done_;           // per bucket: its all-reduce was seen complete
    std::vector<typename detail::request_of<Comm>::type> requests_;
    std::vector<std::size_t> order_;   // buckets in the order they were started (and are waited for)
    reduction_timing timing_;
    std::optional<nn::scoped_gradient_listener> listener_;
};

} // namespace vediff::distributed
