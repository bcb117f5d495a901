#pragma once
// Labeled image sets and a minibatch loader over them. The order of an epoch is a Philox-driven
// Fisher–Yates shuffle, a pure function of (seed, epoch): the same on every platform and thread
// count, and a run resumes exactly from (epoch, position).
#include <algorithm>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/core/random.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::data {

/// Images with one class label each, kept on the host.
template <class T = float>
struct labeled_images {
    tensor<T, cpu> images;             // (N, C, H, W)
    std::vector<std::int32_t> labels;  // (N)

    std::int64_t size() const { return static_cast<std::int64_t>(labels.size()); }
};

/// A permutation of [0, n): Fisher–Yates with draw k (k = 0 .. n−2) taken from the 64 bits of
/// words (2(k mod 2), 2(k mod 2)+1) of Philox block k / 2 of (seed, stream). Index j ∈ [0, i] comes
/// from the high half of a 64×64-bit product (Lemire), whose bias ≤ (i+1)/2^64 is negligible.
inline std::vector<std::int64_t> shuffled_indices(std::int64_t n, std::uint64_t seed, std::uint64_t stream) {
    std::vector<std::int64_t> order(static_cast<std::size_t>(std::max<std::int64_t>(n, 0)));
    for (std::int64_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
    std::uint64_t k = 0;
    for (std::int64_t i = n - 1; i > 0; --i, ++k) {
        const auto block = philox4x32::block(seed, stream, k / 2);
        const std::size_t w = 2 * (k % 2);
        const std::uint64_t bits = (std::uint64_t{block[w]} << 32) | block[w + 1];
        const auto j = static_cast<std::int64_t>((static_cast<unsigned __int128>(bits) * static_cast<std::uint64_t>(i + 1)) >> 64);
        std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
    }
    return order;
}

/// One minibatch; the views stay valid until the loader's next call to next().
template <class T, device D>
struct batch {
    tensor_view<T, D> images;              // (B, C, H, W), B = batch size (smaller only for a kept last batch)
    std::span<const std::int32_t> labels;  // (B)
    std::int64_t epoch = 0;
    std::int64_t position = 0;   // index in the epoch's order of the global batch's first sample
    std::int64_t first_row = 0;  // row of the global batch that images[0] is (a shard's offset)
};

/// Shuffled minibatches of a labeled image set, gathered into a preallocated tensor on device D.
/// It keeps views of the images and labels: the data set must outlive the loader.
///
/// Data parallel: batch_size is the global batch, and a loader with shard {rank, world size}
/// gathers only its consecutive batch_size / count rows of each global batch (the order is the
/// same on every process), so the shards of one step are disjoint and their union is the
/// single-process batch.
template <class T = float, device D = cpu>
class batch_loader {
public:
    batch_loader(const tensor_view<T, cpu>& images, std::span<const std::int32_t> labels, std::int64_t batch_size,
                 std::uint64_t seed, bool drop_last = true, batch_shard shard = {})
        : images_(images), labels_(labels), batch_size_(batch_size), seed_(seed), drop_last_(drop_last), shard_(shard) {
        if (images.rank() < 1 || images.dim(0) != static_cast<std::int64_t>(labels.size()))
            throw shape_error(fmt::format("batch_loader: images {} and {} labels differ in count", images.shape(), labels.size()));
        if (labels.empty()) throw std::invalid_argument("batch_loader: the data set is empty");
        if (batch_size < 1) throw std::invalid_argument(fmt::format("batch_loader: batch size {} < 1", batch_size));
        if (drop_last && batch_size > size())
            throw std::invalid_argument(
                fmt::format("batch_loader: batch size {} exceeds the {} samples, and the last partial batch is dropped", batch_size, size()));
        if (shard.count < 1 || shard.index >= shard.count)
            throw std::invalid_argument(fmt::format("batch_loader: shard {} of {} does not exist", shard.index, shard.count));
        if (shard.count > 1 && (!drop_last || batch_size % static_cast<std::int64_t>(shard.count) != 0))
            throw std::invalid_argument(fmt::format("batch_loader: the global batch {} does not split into {} equal shards{}", batch_size,
                                                    shard.count, drop_last ? "" : " (and a kept partial last batch would not)"));
        local_size_ = batch_size / static_cast<std::int64_t>(shard.count);
        tensor_shape shape = images.shape();
        shape[0] = local_size_;
        batch_images_ = tensor<T, D>(shape);
        if constexpr (!D::host_accessible) staging_ = tensor<T, cpu>(shape);
        batch_labels_.resize(static_cast<std::size_t>(batch_size));
        seek(0, 0);
    }
    batch_loader(const labeled_images<T>& data, std::int64_t batch_size, std::uint64_t seed, bool drop_last = true, batch_shard shard = {})
        : batch_loader(data.images, std::span<const std::int32_t>(data.labels), batch_size, seed, drop_last, shard) {}

    /// The next minibatch, starting a new epoch (and a new order) when the current one is used up.
    batch<T, D> next() {
        const std::int64_t left = size() - position_;
        if (left <= 0 || (drop_last_ && left < batch_size_)) seek(epoch_ + 1, 0);
        const std::int64_t global = std::min(batch_size_, size() - position_);
        // Without sharding the whole (possibly partial last) batch; with it, equal shards.
        const std::int64_t b = shard_.count > 1 ? local_size_ : global;
        const std::int64_t first_row = static_cast<std::int64_t>(shard_.index) * local_size_;
        const auto gather_into = [&](const auto& dst) {
            for (std::int64_t r = 0; r < b; ++r) {
                const std::int64_t src = order_[static_cast<std::size_t>(position_ + first_row + r)];
                const auto row = images_[src];
                memory<cpu>::copy(dst[r].data(), row.data(), static_cast<std::size_t>(row.numel()) * sizeof(T));
                batch_labels_[static_cast<std::size_t>(r)] = labels_[static_cast<std::size_t>(src)];
            }
        };
        if constexpr (D::host_accessible) {
            gather_into(batch_images_.view());
        } else {
            gather_into(staging_.view());
            memory<D>::copy_from_host(batch_images_.data(), staging_.data(), staging_.bytes());
        }
        batch<T, D> out{batch_images_.slice(0, b), std::span<const std::int32_t>(batch_labels_.data(), static_cast<std::size_t>(b)),
                        epoch_, position_, first_row};
        position_ += global;
        return out;
    }

    /// Continues from sample `position` of epoch `epoch` (the values epoch() and position()
    /// reported when the run was saved).
    void seek(std::int64_t epoch, std::int64_t position) {
        if (epoch < 0 || position < 0 || position > size())
            throw std::invalid_argument(fmt::format("batch_loader: cannot seek to epoch {} position {} of {} samples", epoch, position, size()));
        if (epoch != epoch_ || order_.empty()) order_ = shuffled_indices(size(), seed_, static_cast<std::uint64_t>(epoch));
        epoch_ = epoch;
        position_ = position;
    }

    std::int64_t epoch() const { return epoch_; }
    /// Samples of the current epoch already handed out.
    std::int64_t position() const { return position_; }
    std::int64_t size() const { return static_cast<std::int64_t>(labels_.size()); }
    std::int64_t batch_size() const { return batch_size_; }
    /// Rows this process gets of each global batch.
    std::int64_t local_batch_size() const { return local_size_; }
    batch_shard shard() const { return shard_; }
    std::int64_t batches_per_epoch() const { return drop_last_ ? size() / batch_size_ : (size() + batch_size_ - 1) / batch_size_; }
    /// The sample order of the current epoch.
    std::span<const std::int64_t> order() const { return order_; }

private:
    tensor_view<T, cpu> images_;  // (N, C, H, W), owned by the caller
    std::span<const std::int32_t> labels_;
    std::int64_t batch_size_;
    std::uint64_t seed_;
    bool drop_last_;
    batch_shard shard_;
    std::int64_t local_size_ = 0;
    std::int64_t epoch_ = 0;
    std::int64_t position_ = 0;
    std::vector<std::int64_t> order_;
    tensor<T, D> batch_images_;  // (local batch size, C, H, W)
    tensor<T, cpu> staging_;     // (local batch size, C, H, W), host side of a device batch
    std::vector<std::int32_t> batch_labels_;
};

} // namespace vediff::data
