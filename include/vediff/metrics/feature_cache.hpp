#pragma once
// A cache of a reference set's features. The evaluation compares every tokenizer and every sample
// set with the same test images; their features depend only on the feature network's weights and
// on the images, so they are computed once and read back by later runs (the FID Inception takes
// minutes for 10,000 images on 2 cores). The key names the network and holds CRC-32s (zlib) of its
// weights file and of the images' values and their count: other weights or other images make
// another key, never a stale hit. A file whose metadata does not say it holds that key is
// recomputed and replaced; files are written atomically (io::write_file_atomically).
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <zlib.h>

#include "vediff/core/error.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/io/safetensors.hpp"

namespace vediff::metrics {

/// CRC-32 of a file's bytes.
inline std::uint32_t file_crc32(const std::filesystem::path& path) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) throw io_error(fmt::format("{}: cannot open to fingerprint it", path.string()));
    uLong crc = crc32(0L, Z_NULL, 0);
    std::vector<unsigned char> buffer(1 << 20);
    for (std::size_t n; (n = std::fread(buffer.data(), 1, buffer.size(), f)) > 0;) crc = crc32(crc, buffer.data(), static_cast<uInt>(n));
    const bool failed = std::ferror(f);
    std::fclose(f);
    if (failed) throw io_error(fmt::format("{}: read error while fingerprinting it", path.string()));
    return static_cast<std::uint32_t>(crc);
}

/// CRC-32 of a host tensor's values (its bytes in row-major order).
inline std::uint32_t values_crc32(const tensor_view<float>& x) {
    const auto values = x.to_vector();
    uLong crc = crc32(0L, Z_NULL, 0);
    const auto* bytes = reinterpret_cast<const unsigned char*>(values.data());
    std::size_t left = values.size() * sizeof(float);
    while (left > 0) {
        const auto n = static_cast<uInt>(std::min<std::size_t>(left, 1u << 30));
        crc = crc32(crc, bytes, n);
        bytes += n;
        left -= n;
    }
    return static_cast<std::uint32_t>(crc);
}

/// The cache key of `network`'s features of `images` with the weights in `weights`.
inline std::string feature_cache_key(const std::string& network, const std::filesystem::path& weights, const tensor_view<float>& images) {
    return fmt::format("{}-w{:08x}-x{:08x}-n{}", network, file_crc32(weights), values_crc32(images), images.dim(0));
}

/// The tensors compute() returns, cached as DIR/<key>.safetensors: read back when that file holds
/// the key, else computed and written. An empty dir means no cache. `reused` says which happened.
template <class Compute>
std::map<std::string, tensor<float>> cached_features(const std::filesystem::path& dir, const std::string& key, Compute&& compute,
                                                     bool* reused = nullptr) {
    if (reused) *reused = false;
    if (dir.empty()) return compute();
    const auto path = dir / (key + ".safetensors");
    if (std::filesystem::exists(path)) {
        try {
            const io::safetensors_file file(path);
            const auto it = file.metadata().find("vediff.feature_cache_key");
            if (it != file.metadata().end() && it->second == key) {
                std::map<std::string, tensor<float>> out;
                for (const auto& name : file.names()) out.emplace(name, file.get<float>(name));
                if (reused) *reused = true;
                return out;
            }
        } catch (const io_error&) {
            // A damaged cache file is recomputed and replaced below, like a missing one.
        }
    }
    auto out = compute();
    std::filesystem::create_directories(dir);
    io::safetensors_writer writer;
    for (const auto& [name, t] : out) writer.add(name, t.view());
    writer.add_metadata("vediff.feature_cache_key", key);
    writer.write(path);
    return out;
}

} // namespace vediff::metrics
