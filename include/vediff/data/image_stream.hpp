#pragma once
// A folder of images too large for memory (ImageNet: 1.28 M files), streamed: the files are listed
// once (data/image_folder.hpp's ImageFolder convention: sorted paths, a label per top-level
// subfolder), and a pool of worker threads decodes the coming minibatches into a bounded ring of
// prefetched batches while the model trains on the current one. Only the ring is in memory.
//
// What a batch holds is a pure function of (files, seed, epoch, position), never of the worker
// count or of timing: the epoch order is data/loader.hpp's Philox shuffle, and every row of every
// batch is decoded into its own slot. Horizontal flips stay the trainer's
// (data::random_horizontal_flip, a function of (seed, step, row)).
//
// A file that cannot be decoded (corrupt, truncated, not an image) is reported once on stderr,
// naming it and the cause, and replaced by the next readable file in sorted order, so one bad
// JPEG among a million does not stop a run and the replacement is the same on every machine.
// With skip_corrupt = false (train-tokenizer --fail-on-corrupt) the first one ends the run instead,
// as an io_error naming it.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/core/error.hpp"
#include "vediff/core/random.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/data/center_crop.hpp"
#include "vediff/data/image_folder.hpp"
#include "vediff/data/loader.hpp"
#include "vediff/io/image.hpp"

namespace vediff::data {

/// How a file becomes a square (C, size, size) image.
enum class crop_policy {
    adm,     // ADM's center_crop_arr (data/center_crop.hpp): the field's ImageNet protocol
    resize,  // the central square resized with stb_image_resize (data/image_folder.hpp)
};

inline crop_policy parse_crop_policy(const std::string& name) {
    if (name == "adm") return crop_policy::adm;
    if (name == "resize") return crop_policy::resize;
    throw std::invalid_argument(fmt::format("crop '{}': expected adm or resize", name));
}
inline const char* to_string(crop_policy c) { return c == crop_policy::adm ? "adm" : "resize"; }

struct image_preprocessing {
    std::int64_t size = 256;   // side of the square output
    int channels = 3;          // 1 (luminance) or 3 (RGB)
    crop_policy crop = crop_policy::adm;
    io::value_range range = io::symmetric_range;

    void validate() const {
        if (size < 1) throw std::invalid_argument(fmt::format("image preprocessing: size {} < 1", size));
        if (channels != 1 && channels != 3) throw std::invalid_argument(fmt::format("image preprocessing: channels {} is not 1 or 3", channels));
    }
    std::int64_t values_per_image() const { return channels * size * size; }

    /// Decodes, crops and scales one file into out (C, size, size); throws io_error naming the
    /// file and the cause.
    template <class T>
    void load(const std::filesystem::path& file, std::span<T> out) const {
        const auto decoded = io::read_image(file, channels);
        const auto square = crop == crop_policy::adm ? adm_center_crop(decoded, size) : center_crop_resize(decoded, size);
        io::image_to_planar(square, out, range);
    }
};

/// The unreadable files met while reading a set, each reported once on stderr (thread-safe).
class unreadable_files {
public:
    void report(std::int64_t index, const std::string& message) {
        const std::lock_guard lock(mutex_);
        if (indices_.insert(index).second)
            fmt::print(stderr, "warning: skipping an unreadable image (the next readable file takes its place): {}\n", message);
    }
    std::vector<std::int64_t> indices() const {
        const std::lock_guard lock(mutex_);
        return {indices_.begin(), indices_.end()};
    }

private:
    mutable std::mutex mutex_;
    std::set<std::int64_t> indices_;
};

/// Decodes file `index` of the set into out and returns its index; when it cannot be read, and
/// `skipped` is given, reports it there and decodes the next readable file in sorted order
/// (wrapping), returning that one's index. Without `skipped` the first unreadable file is an
/// io_error naming it; with it, an io_error says when no file at all can be read.
template <class T>
std::int64_t load_or_substitute(const image_files& set, std::int64_t index, const image_preprocessing& prep, std::span<T> out,
                                unreadable_files* skipped) {
    for (std::int64_t tries = 0; tries < set.size(); ++tries, index = (index + 1) % set.size()) {
        try {
            prep.load(set.files[static_cast<std::size_t>(index)], out);
            return index;
        } catch (const io_error& e) {
            if (!skipped) throw;
            skipped->report(index, e.what());
        }
    }
    throw io_error(fmt::format("image files: none of the {} files can be read", set.size()));
}

/// Decodes files [begin, end) of a list into images (end − begin, C, size, size) with their labels,
/// in parallel, in file order: the sequential reading of evaluation and encoding. Unreadable files
/// are handled as load_or_substitute does (a substitute's label comes with it).
template <class T = float>
labeled_images<T> load_image_range(const image_files& set, std::int64_t begin, std::int64_t end, const image_preprocessing& prep,
                                   unreadable_files* skipped = nullptr) {
    prep.validate();
    if (begin < 0 || end > set.size() || begin > end)
        throw std::invalid_argument(fmt::format("load_image_range: [{}, {}) is not within the {} files", begin, end, set.size()));
    const std::int64_t per_image = prep.values_per_image();
    labeled_images<T> out{tensor<T, cpu>({end - begin, prep.channels, prep.size, prep.size}),
                          std::vector<std::int32_t>(static_cast<std::size_t>(end - begin))};
    std::vector<std::string> errors(static_cast<std::size_t>(end - begin));
    cpu_detail::parallel_for(end - begin, [&](std::int64_t i) {
        try {  // an exception must not leave the OpenMP region
            const auto used = load_or_substitute(set, begin + i, prep,
                                                 std::span<T>(out.images.data() + i * per_image, static_cast<std::size_t>(per_image)), skipped);
            out.labels[static_cast<std::size_t>(i)] = set.labels[static_cast<std::size_t>(used)];
        } catch (const std::exception& e) {
            errors[static_cast<std::size_t>(i)] = e.what();
        }
    }, 1 << 20);
    for (const auto& e : errors)
        if (!e.empty()) throw io_error(e);
    return out;
}

struct stream_options {
    int workers = 2;                   // decoding threads (0: decode in next(), on the caller's thread)
    std::int64_t prefetch_batches = 4; // batches decoded ahead (the ring's size)
    bool skip_corrupt = true;          // false: an unreadable file ends the run
};

/// Shuffled minibatches of image files, decoded ahead by a worker pool (see the top of the
/// file). The interface is batch_loader's: next(), seek(epoch, position), epoch(), position(), and
/// the data-parallel shard the same way (each process decodes only its rows of every global batch).
/// The last partial batch of an epoch is always dropped.
template <class T = float, device D = cpu>
class streaming_image_loader {
public:
    streaming_image_loader(image_files set, image_preprocessing prep, std::int64_t batch_size, std::uint64_t seed, batch_shard shard = {},
                           stream_options opt = {})
        : set_(std::move(set)), prep_(prep), batch_size_(batch_size), seed_(seed), shard_(shard), opt_(opt) {
        prep_.validate();
        if (set_.files.empty()) throw std::invalid_argument("streaming_image_loader: the file list is empty");
        if (set_.labels.size() != set_.files.size())
            throw std::invalid_argument(fmt::format("streaming_image_loader: {} files and {} labels", set_.files.size(), set_.labels.size()));
        if (batch_size < 1) throw std::invalid_argument(fmt::format("streaming_image_loader: batch size {} < 1", batch_size));
        if (batch_size > size())
            throw std::invalid_argument(
                fmt::format("streaming_image_loader: batch size {} exceeds the {} files, and the last partial batch is dropped", batch_size, size()));
        if (shard.count < 1 || shard.index >= shard.count || batch_size % static_cast<std::int64_t>(shard.count) != 0)
            throw std::invalid_argument(fmt::format("streaming_image_loader: the global batch {} does not split into {} equal shards", batch_size,
                                                    shard.count));
        if (opt.workers < 0) throw std::invalid_argument(fmt::format("streaming_image_loader: {} workers < 0", opt.workers));
        if (opt.prefetch_batches < 1) throw std::invalid_argument(fmt::format("streaming_image_loader: prefetch {} < 1", opt.prefetch_batches));
        local_size_ = batch_size / static_cast<std::int64_t>(shard.count);
        const tensor_shape shape{local_size_, prep_.channels, prep_.size, prep_.size};
        slots_.resize(static_cast<std::size_t>(opt.workers > 0 ? opt.prefetch_batches : 1));
        for (auto& s : slots_) {
            s.images = tensor<T, cpu>(shape);
            s.labels.resize(static_cast<std::size_t>(local_size_));
        }
        batch_images_ = tensor<T, D>(shape);
        batch_labels_.resize(static_cast<std::size_t>(local_size_));
        seek(0, 0);
    }
    streaming_image_loader(const streaming_image_loader&) = delete;
    streaming_image_loader& operator=(const streaming_image_loader&) = delete;
    ~streaming_image_loader() { stop_workers(); }

    /// The next minibatch, starting a new epoch (and a new order) when the current one is used up.
    /// The views stay valid until the next call.
    batch<T, D> next() {
        const std::int64_t j = consumed_;
        auto& slot = slots_[static_cast<std::size_t>(j % static_cast<std::int64_t>(slots_.size()))];
        if (opt_.workers == 0) {
            for (std::int64_t r = 0; r < local_size_; ++r) fill_row(slot, j, r);
        } else {
            std::unique_lock lock(mutex_);
            if (slot.done < local_size_) {
                const auto start = std::chrono::steady_clock::now();
                ready_.wait(lock, [&] { return slot.done == local_size_; });
                stall_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            }
        }
        if (!slot.error.empty()) {
            const std::string error = slot.error;
            throw io_error(error);
        }
        if constexpr (D::host_accessible) memory<cpu>::copy(batch_images_.data(), slot.images.data(), slot.images.bytes());
        else memory<D>::copy_from_host(batch_images_.data(), slot.images.data(), slot.images.bytes());
        std::copy(slot.labels.begin(), slot.labels.end(), batch_labels_.begin());
        const auto [epoch, position] = location(j);
        {
            const std::lock_guard lock(mutex_);
            slot.done = 0;
            ++consumed_;
            prune_orders(epoch);
        }
        capacity_.notify_all();
        epoch_ = epoch;
        position_ = position + batch_size_;
        return {batch_images_.view(), std::span<const std::int32_t>(batch_labels_), epoch, position,
                static_cast<std::int64_t>(shard_.index) * local_size_};
    }

    /// Continues from sample `position` of epoch `epoch` (the values epoch() and position()
    /// reported when the run was saved). Batches already decoded ahead are dropped.
    void seek(std::int64_t epoch, std::int64_t position) {
        if (epoch < 0 || position < 0 || position > size())
            throw std::invalid_argument(fmt::format("streaming_image_loader: cannot seek to epoch {} position {} of {} samples", epoch, position, size()));
        stop_workers();
        start_epoch_ = epoch;
        start_position_ = position;
        epoch_ = epoch;
        position_ = position;
        consumed_ = 0;
        next_ticket_ = 0;
        for (auto& s : slots_) {
            s.done = 0;
            s.error.clear();
        }
        orders_.clear();
        stopping_ = false;
        for (int w = 0; w < opt_.workers; ++w) workers_.emplace_back([this] { work(); });
    }

    std::int64_t epoch() const { return epoch_; }
    std::int64_t position() const { return position_; }
    std::int64_t size() const { return set_.size(); }
    std::int64_t batch_size() const { return batch_size_; }
    std::int64_t local_batch_size() const { return local_size_; }
    batch_shard shard() const { return shard_; }
    std::int64_t batches_per_epoch() const { return size() / batch_size_; }
    const image_files& files() const { return set_; }
    const image_preprocessing& preprocessing() const { return prep_; }

    /// Seconds next() has waited for batches the workers had not finished (0 while they keep ahead).
    double stall_seconds() const {
        const std::lock_guard lock(mutex_);
        return stall_seconds_;
    }
    /// The files found unreadable so far (each replaced by the next readable one).
    std::vector<std::filesystem::path> skipped_files() const {
        std::vector<std::filesystem::path> out;
        for (const auto i : unreadable_.indices()) out.push_back(set_.files[static_cast<std::size_t>(i)]);
        return out;
    }

private:
    struct slot {
        tensor<T, cpu> images;  // (local batch, C, size, size)
        std::vector<std::int32_t> labels;
        std::int64_t done = 0;  // rows decoded (guarded by mutex_)
        std::string error;      // the first fatal decode error of the batch (guarded by mutex_)
    };

    /// (epoch, position) of batch j after the last seek: batches fill epochs from the seek point
    /// on, a new epoch starting where fewer than batch_size samples are left.
    std::pair<std::int64_t, std::int64_t> location(std::int64_t j) const {
        const std::int64_t left_in_first = (size() - start_position_) / batch_size_;
        if (j < left_in_first) return {start_epoch_, start_position_ + j * batch_size_};
        const std::int64_t k = j - left_in_first, per_epoch = batches_per_epoch();
        return {start_epoch_ + 1 + k / per_epoch, (k % per_epoch) * batch_size_};
    }

    /// The epoch's order, computed once and shared by the workers.
    std::shared_ptr<const std::vector<std::int64_t>> order(std::int64_t epoch) {
        const std::lock_guard lock(order_mutex_);
        auto& o = orders_[epoch];
        if (!o) o = std::make_shared<const std::vector<std::int64_t>>(shuffled_indices(size(), seed_, static_cast<std::uint64_t>(epoch)));
        return o;
    }
    void prune_orders(std::int64_t current_epoch) {
        const std::lock_guard lock(order_mutex_);
        std::erase_if(orders_, [&](const auto& entry) { return entry.first < current_epoch; });
    }

    /// Decodes row r of batch j into its slot: the row's file, or the next readable one.
    void fill_row(slot& s, std::int64_t j, std::int64_t r) {
        const auto [epoch, position] = location(j);
        const auto ord = order(epoch);
        const std::int64_t file = (*ord)[static_cast<std::size_t>(position + static_cast<std::int64_t>(shard_.index) * local_size_ + r)];
        const std::int64_t per_image = prep_.values_per_image();
        try {
            const auto used = load_or_substitute(set_, file, prep_, std::span<T>(s.images.data() + r * per_image, static_cast<std::size_t>(per_image)),
                                                 opt_.skip_corrupt ? &unreadable_ : nullptr);
            s.labels[static_cast<std::size_t>(r)] = set_.labels[static_cast<std::size_t>(used)];
        } catch (const io_error& e) {
            const std::lock_guard lock(mutex_);
            if (s.error.empty())
                s.error = opt_.skip_corrupt ? e.what() : fmt::format("{} (--fail-on-corrupt: an unreadable file ends the run)", e.what());
        } catch (const std::exception& e) {  // anything else (memory, a bug) must not escape a worker thread
            const std::lock_guard lock(mutex_);
            if (s.error.empty()) s.error = fmt::format("streaming_image_loader: batch {} row {}: {}", j, r, e.what());
        }
    }

    void work() {
        for (;;) {
            std::int64_t ticket;
            {
                std::unique_lock lock(mutex_);
                const auto limit = [&] { return (consumed_ + static_cast<std::int64_t>(slots_.size())) * local_size_; };
                capacity_.wait(lock, [&] { return stopping_ || next_ticket_ < limit(); });
                if (stopping_) return;
                ticket = next_ticket_++;
            }
            const std::int64_t j = ticket / local_size_, r = ticket % local_size_;
            auto& s = slots_[static_cast<std::size_t>(j % static_cast<std::int64_t>(slots_.size()))];
            fill_row(s, j, r);
            bool complete;
            {
                const std::lock_guard lock(mutex_);
                complete = ++s.done == local_size_;
            }
            if (complete) ready_.notify_all();
        }
    }

    void stop_workers() {
        {
            const std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        capacity_.notify_all();
        for (auto& w : workers_) w.join();
        workers_.clear();
    }

    image_files set_;
    image_preprocessing prep_;
    std::int64_t batch_size_;
    std::uint64_t seed_;
    batch_shard shard_;
    stream_options opt_;
    std::int64_t local_size_ = 0;
    std::int64_t start_epoch_ = 0, start_position_ = 0;  // the last seek
    std::int64_t epoch_ = 0, position_ = 0;              // as batch_loader reports them
    std::int64_t consumed_ = 0;                          // batches handed out since the last seek
    std::int64_t next_ticket_ = 0;                       // the next (batch, row) a worker takes: batch·local + row
    std::vector<slot> slots_;                            // batch j lives in slot j mod size
    tensor<T, D> batch_images_;
    std::vector<std::int32_t> batch_labels_;
    std::vector<std::thread> workers_;
    bool stopping_ = false;
    double stall_seconds_ = 0;
    unreadable_files unreadable_;
    mutable std::mutex mutex_;
    std::condition_variable ready_, capacity_;
    std::mutex order_mutex_;
    std::map<std::int64_t, std::shared_ptr<const std::vector<std::int64_t>>> orders_;
};

} // namespace vediff::data
