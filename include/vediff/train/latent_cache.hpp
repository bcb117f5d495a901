#pragma once
// The latent cache a diffusion transformer trains on: a tokenizer's posterior samples of a data
// set, their labels, the per-channel mean and (unbiased) std of the latents (the normalization,
// computed once here and applied by every reader), and which tokenizer made them. One safetensors
// file: "latents" F32 (N, C, h, w), "labels" I32 (N), "latent_mean" and "latent_std" F64 (C), and
// the tokenizer's directory and configuration in the metadata.
//
// A loaded cache maps the file (io/mapped_file.hpp) instead of reading it: an ImageNet f16d32
// cache is 1.28 M × 32×16×16 floats ≈ 42 GB, more than a machine's memory, and the ranks of a
// node then share one copy in the page cache. Pages are read as batches touch them; readers
// normalize each batch, not the set.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/error.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/diffusion/latent_normalization.hpp"
#include "vediff/io/atomic_file.hpp"
#include "vediff/io/safetensors.hpp"

namespace vediff::train {

struct latent_cache {
    tensor_view<float, cpu> latents;                // (N, C, h, w), inside `storage`
    std::shared_ptr<const void> storage;            // owns the latents: the mapped file, or a tensor
    std::vector<std::int32_t> labels;               // (N)
    std::vector<double> channel_mean, channel_std;  // (C)
    std::string tokenizer;                          // the tokenizer's run directory
    std::string tokenizer_config = "{}";            // its run configuration (JSON)

    std::int64_t size() const { return static_cast<std::int64_t>(labels.size()); }

    /// Makes `values` the cache's latents, owned by the cache.
    void adopt_latents(tensor<float> values) {
        auto owner = std::make_shared<tensor<float>>(std::move(values));
        latents = owner->view();
        storage = std::move(owner);
    }
};

inline void save_latent_cache(const std::filesystem::path& path, const latent_cache& cache) {
    io::safetensors_writer w;
    w.add("latents", cache.latents);
    const auto n = static_cast<std::int64_t>(cache.labels.size());
    const auto c = static_cast<std::int64_t>(cache.channel_mean.size());
    w.add("labels", tensor<std::int32_t>::from_host({n}, std::span<const std::int32_t>(cache.labels)).view());
    w.add("latent_mean", tensor<double>::from_host({c}, std::span<const double>(cache.channel_mean)).view());
    w.add("latent_std", tensor<double>::from_host({c}, std::span<const double>(cache.channel_std)).view());
    w.add_metadata("format", "vediff.latent_cache.v1");
    w.add_metadata("tokenizer", cache.tokenizer);
    w.add_metadata("tokenizer_config", cache.tokenizer_config);
    w.write(path);
}

/// Writes a cache of n latents of shape latent_shape = (C, h, w) as they are made, holding one
/// batch at a time (an ImageNet cache is larger than memory): produce(append) calls
/// append(z, labels) with consecutive (B, C, h, w) host batches and their B labels until all n
/// are given. The labels and the channel statistics follow the latents in the file. The file
/// appears whole or not at all (a failure leaves any earlier cache at `path` as it was).
/// Returns the statistics.
template <class Produce>
diffusion::latent_moments write_latent_cache(const std::filesystem::path& path, std::int64_t n, const tensor_shape& latent_shape,
                                             const std::string& tokenizer, const std::string& tokenizer_config, Produce&& produce) {
    if (latent_shape.rank() != 3) throw shape_error(fmt::format("write_latent_cache: latent shape {} is not (C, h, w)", latent_shape));
    if (n < 1) throw std::invalid_argument(fmt::format("write_latent_cache: a cache of {} latents", n));
    const auto c = latent_shape[0];
    const std::vector<io::safetensors_layout_entry> layout{{"latents", "F32", tensor_shape{n, latent_shape[0], latent_shape[1], latent_shape[2]}},
                                                           {"labels", "I32", tensor_shape{n}},
                                                           {"latent_mean", "F64", tensor_shape{c}},
                                                           {"latent_std", "F64", tensor_shape{c}}};
    const io::metadata_map metadata{{"format", "vediff.latent_cache.v1"}, {"tokenizer", tokenizer}, {"tokenizer_config", tokenizer_config}};
    // The checksums are known once the data is written: the header goes first with placeholders of
    // the same length, and is written again over itself at the end.
    const auto header_with = [&](const std::map<std::string, std::uint64_t>& sums) {
        return io::safetensors_header(layout, io::with_checksums(metadata, sums));
    };
    std::map<std::string, std::uint64_t> sums{{"latents", 0}, {"labels", 0}, {"latent_mean", 0}, {"latent_std", 0}};
    const std::string placeholder = header_with(sums);
    diffusion::latent_moments moments;
    io::write_file_atomically(path, [&](io::atomic_file& f) {
        f.write(placeholder);
        std::int64_t written = 0;
        std::vector<std::int32_t> labels;
        io::xxh3_64_stream latents_sum;
        produce([&](const tensor_view<float, cpu>& z, std::span<const std::int32_t> batch_labels) {
            if (z.rank() != 4 || z.dim(1) != latent_shape[0] || z.dim(2) != latent_shape[1] || z.dim(3) != latent_shape[2])
                throw shape_error(fmt::format("write_latent_cache: a batch of latents {} is not (B, {})", z.shape(), latent_shape));
            if (written + z.dim(0) > n)
                throw std::logic_error(fmt::format("write_latent_cache: {} latents given for a cache of {}", written + z.dim(0), n));
            if (static_cast<std::int64_t>(batch_labels.size()) != z.dim(0))
                throw std::invalid_argument(fmt::format("write_latent_cache: {} labels for a batch of {} latents", batch_labels.size(), z.dim(0)));
            labels.insert(labels.end(), batch_labels.begin(), batch_labels.end());
            const auto values = z.to_vector();  // contiguous, whatever the view's strides
            f.write(values.data(), values.size() * sizeof(float));
            latents_sum.update(values.data(), values.size() * sizeof(float));
            moments.add(z);
            written += z.dim(0);
        });
        if (written != n) throw std::logic_error(fmt::format("write_latent_cache: {} latents given for a cache of {}", written, n));
        const std::vector<double> mean = moments.mean();
        const std::vector<double> sd = moments.stddev();
        const auto put = [&](const char* name, const auto& v) {
            const std::size_t bytes = v.size() * sizeof(v[0]);
            f.write(v.data(), bytes);
            sums[name] = io::xxh3_64(v.data(), bytes);
        };
        put("labels", labels);
        put("latent_mean", mean);
        put("latent_std", sd);
        sums["latents"] = latents_sum.digest();
        const std::string header = header_with(sums);
        if (header.size() != placeholder.size())
            throw std::logic_error("write_latent_cache: the header with checksums differs in length from its placeholder");
        f.write_at(0, header.data(), header.size());
    });
    return moments;
}

/// Maps and checks a latent cache; io_error names the file and the inconsistency. The latents
/// are not copied: they stay in the mapped file, which the cache keeps alive.
inline latent_cache load_latent_cache(const std::filesystem::path& path) {
    const io::safetensors_file f(path, io::safetensors_access::map);
    io::note_if_unverified(f);
    const auto meta = [&](const char* key) {
        const auto it = f.metadata().find(key);
        if (it == f.metadata().end()) f.fail(fmt::format("not a latent cache: metadata '{}' is missing", key));
        return it->second;
    };
    if (meta("format") != "vediff.latent_cache.v1") f.fail(fmt::format("metadata 'format' is '{}', not a latent cache", meta("format")));
    latent_cache cache;
    cache.tokenizer = meta("tokenizer");
    cache.tokenizer_config = meta("tokenizer_config");
    if (!f.contains("latents")) f.fail("not a latent cache: no tensor 'latents'");
    if (f.entry("latents").dtype != "F32") f.fail(fmt::format("latents are {}, a latent cache holds F32", f.entry("latents").dtype));
    cache.latents = f.view<float>("latents");
    cache.storage = f.storage();
    cache.labels = f.get<std::int32_t>("labels").to_vector();
    cache.channel_mean = f.get<double>("latent_mean").to_vector();
    cache.channel_std = f.get<double>("latent_std").to_vector();
    if (cache.latents.rank() != 4 || cache.latents.dim(0) != cache.size())
        f.fail(fmt::format("latents {} and {} labels do not match (latents must be (N, C, h, w))", cache.latents.shape(), cache.size()));
    if (static_cast<std::int64_t>(cache.channel_mean.size()) != cache.latents.dim(1) || cache.channel_std.size() != cache.channel_mean.size())
        f.fail(fmt::format("latent_mean ({}) and latent_std ({}) must have one entry per channel of latents {}", cache.channel_mean.size(),
                           cache.channel_std.size(), cache.latents.shape()));
    for (double s : cache.channel_std)
        if (!(s > 0) || !std::isfinite(s)) f.fail(fmt::format("latent_std holds {}, not a positive number", s));
    return cache;
}

} // namespace vediff::train
