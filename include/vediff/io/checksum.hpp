#pragma once
// Checksums of the files vediff writes and later trusts (checkpoints, latent caches, feature
// statistics): XXH3-64 from Debian's libxxhash, over each tensor's bytes as stored and over the
// file's other metadata, written as 16 hexadecimal digits. Safetensors has no checksum of its own;
// one flipped bit in a tensor's data would otherwise load silently.
#include <cstddef>
#include <cstdint>
#include <map>
#include <new>
#include <optional>
#include <string>
#include <string_view>

#include <fmt/format.h>
#include <xxhash.h>

namespace vediff::io {

/// A safetensors file's __metadata__: string keys, string values.
using metadata_map = std::map<std::string, std::string>;

/// The metadata key under which a safetensors file vediff writes keeps its checksums: a JSON
/// object {tensor name: 16 hex digits, ..., "__metadata__": 16 hex digits}.
inline constexpr std::string_view checksum_metadata_key = "vediff.xxh3_64";

/// XXH3-64 of a byte range (seed 0).
inline std::uint64_t xxh3_64(const void* data, std::size_t bytes) { return XXH3_64bits(data, bytes); }

/// XXH3-64 of data given in pieces, equal to xxh3_64 of their concatenation.
class xxh3_64_stream {
public:
    xxh3_64_stream() : state_(XXH3_createState()) {
        if (!state_ || XXH3_64bits_reset(state_) != XXH_OK) throw std::bad_alloc();
    }
    ~xxh3_64_stream() { XXH3_freeState(state_); }
    xxh3_64_stream(const xxh3_64_stream&) = delete;
    xxh3_64_stream& operator=(const xxh3_64_stream&) = delete;

    void update(const void* data, std::size_t bytes) {
        if (bytes) (void)XXH3_64bits_update(state_, data, bytes);
    }
    std::uint64_t digest() const { return XXH3_64bits_digest(state_); }

private:
    XXH3_state_t* state_;
};

/// 16 lower-case hexadecimal digits.
inline std::string checksum_text(std::uint64_t h) { return fmt::format("{:016x}", h); }

/// The value of checksum_text, or nothing when the text is not 16 hexadecimal digits.
inline std::optional<std::uint64_t> parse_checksum_text(std::string_view s) {
    if (s.size() != 16) return std::nullopt;
    std::uint64_t v = 0;
    for (const char c : s) {
        int d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else return std::nullopt;
        v = v << 4 | std::uint64_t(d);
    }
    return v;
}

/// XXH3-64 of a metadata map without the checksum key: each key and value followed by a NUL, in
/// key order, so that it does not depend on the header's JSON formatting.
inline std::uint64_t metadata_checksum(const metadata_map& metadata) {
    xxh3_64_stream h;
    static constexpr char nul = '\0';
    for (const auto& [k, v] : metadata) {
        if (k == checksum_metadata_key) continue;
        h.update(k.data(), k.size());
        h.update(&nul, 1);
        h.update(v.data(), v.size());
        h.update(&nul, 1);
    }
    return h.digest();
}

} // namespace vediff::io
