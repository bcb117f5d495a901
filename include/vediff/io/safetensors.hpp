#pragma once
// The safetensors format (huggingface/safetensors): an 8-byte little-endian header length N,
// N bytes of JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
// {string: string}} padded with spaces, then the raw little-endian tensor bytes, offsets relative
// to the end of the header. Tensors are written as F32, F64, BF16, I32 or I64 and read from F16, BF16, F32, F64,
// I32 or I64, converted to the requested type (integer tensors, e.g. labels, only from I32/I64). A loaded file is validated completely (sizes, offsets, dtypes)
// before any tensor is handed out; every problem is an io_error naming the file and the cause.
//
// Integrity: every file vediff writes carries, in its __metadata__ under "vediff.xxh3_64", an
// XXH3-64 checksum of each tensor's bytes and of the other metadata (io/checksum.hpp); opening a
// file verifies them all, and a mismatch is an io_error naming the file and the tensor. Files
// without it (PyTorch's, older vediff's) load unverified: checksummed() tells, and the loaders of
// files vediff trusts (checkpoints, latent caches, feature statistics) say so in one line.
#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "vediff/core/error.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/io/atomic_file.hpp"
#include "vediff/core/bfloat16.hpp"
#include "vediff/io/checksum.hpp"
#include "vediff/io/mapped_file.hpp"
#include "vediff/nn/layer.hpp"

namespace vediff::io {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; vediff assumes a little-endian host");

namespace detail {

/// Bytes per element of a safetensors dtype we can read, 0 for the others.
inline std::size_t safetensors_dtype_size(std::string_view dtype) {
    if (dtype == "F64" || dtype == "I64") return 8;
    if (dtype == "F32" || dtype == "I32") return 4;
    if (dtype == "F16" || dtype == "BF16") return 2;
    return 0;
}

/// The dtype a tensor of T is stored as when no conversion is needed (labels are int32 or int64).
template <class T>
constexpr const char* safetensors_native_dtype() {
    if constexpr (std::is_same_v<T, bfloat16>) return "BF16";
    else if constexpr (std::is_same_v<T, std::int32_t>) return "I32";
    else if constexpr (std::is_same_v<T, std::int64_t>) return "I64";
    else if constexpr (std::is_same_v<T, double>) return "F64";
    else return "F32";
}

/// The dtype vediff writes a tensor of T as.
template <class T>
constexpr const char* safetensors_dtype_of() {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, bfloat16> ||
                      std::is_same_v<T, std::int32_t> || std::is_same_v<T, std::int64_t>,
                  "safetensors: vediff writes float (F32), double (F64), bfloat16 (BF16), int32 (I32) or int64 (I64)");
    return safetensors_native_dtype<T>();
}

/// IEEE 754 binary16 to binary32 (exact: every half is a float).
inline float half_to_float(std::uint16_t h) {
    const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
    const std::uint32_t exponent = (h >> 10) & 0x1fu;
    const std::uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0) {  // zero or subnormal: mantissa · 2^−24
        const float v = std::ldexp(static_cast<float>(mantissa), -24);
        return sign ? -v : v;
    }
    const std::uint32_t bits = exponent == 31 ? (sign | 0x7f800000u | (mantissa << 13))               // inf, nan
                                              : (sign | ((exponent + 112u) << 23) | (mantissa << 13));  // rebias 15 → 127
    return std::bit_cast<float>(bits);
}

/// bfloat16 is the upper half of a binary32.
inline float bfloat16_to_float(std::uint16_t b) { return std::bit_cast<float>(std::uint32_t{b} << 16); }

} // namespace detail

/// Where a tensor lies in a safetensors file.
struct safetensors_entry {
    std::string dtype;      // "F16", "BF16", "F32", "F64", "I32" or "I64"
    tensor_shape shape;
    std::size_t begin = 0;  // byte offsets into the data section, [begin, end)
    std::size_t end = 0;
};

/// How a safetensors file's bytes are held: read into memory, or mapped (io/mapped_file.hpp), so
/// that a data set larger than memory is paged in as it is used and shared by the processes of a
/// node.
enum class safetensors_access { read, map };

/// A safetensors file, validated completely on opening.
class safetensors_file {
public:
    explicit safetensors_file(std::filesystem::path path, safetensors_access access = safetensors_access::read) : path_(std::move(path)) {
        if (access == safetensors_access::map) {
            std::shared_ptr<mapped_file> mapping;
            try {
                mapping = std::make_shared<mapped_file>(path_);
            } catch (const io_error& e) {
                throw io_error(fmt::format("safetensors: {}", e.what()));
            }
            mapped_ = true;
            parse(mapping->data(), mapping->size());
            storage_ = std::move(mapping);
            return;
        }
        std::FILE* f = std::fopen(path_.c_str(), "rb");
        if (!f) fail(fmt::format("cannot open: {}", std::strerror(errno)));
        auto bytes = std::make_shared<std::vector<char>>();
        char buf[1 << 16];
        for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) bytes->insert(bytes->end(), buf, buf + n);
        const int read_errno = std::ferror(f) ? errno : 0;
        std::fclose(f);
        if (read_errno) fail(fmt::format("read error: {}", std::strerror(read_errno)));
        parse(bytes->data(), bytes->size());
        storage_ = std::move(bytes);
    }

    const std::filesystem::path& path() const { return path_; }
    const metadata_map& metadata() const { return metadata_; }
    /// True when the file carried vediff's checksums (all verified on opening); false for a file
    /// written without them, whose data is not verified.
    bool checksummed() const { return checksummed_; }
    const std::map<std::string, safetensors_entry>& entries() const { return entries_; }
    bool contains(const std::string& name) const { return entries_.count(name) != 0; }

    std::vector<std::string> names() const {
        std::vector<std::string> out;
        for (auto& [name, e] : entries_) out.push_back(name);
        return out;
    }

    const safetensors_entry& entry(const std::string& name) const {
        auto it = entries_.find(name);
        if (it == entries_.end()) fail(fmt::format("no tensor named '{}'", name));
        return it->second;
    }

    /// The tensor `name`, converted to T.
    template <class T, device D = cpu>
    tensor<T, D> get(const std::string& name) const {
        const auto& e = entry(name);
        tensor<T, D> t(e.shape);
        read_into(name, t.view());
        return t;
    }

    /// The tensor `name` where it lies in the file's bytes, without a copy: its dtype must be T's
    /// own and its data aligned for T. Valid while storage() is held (a mapped file then reads
    /// pages on first touch; writes go to this process's private copy of a page, never the file).
    template <class T>
    tensor_view<T, cpu> view(const std::string& name) const {
        const auto& e = entry(name);
        if (e.dtype != detail::safetensors_native_dtype<T>())
            fail(fmt::format("tensor '{}' is {}; it can be used in place only as {}", name, e.dtype, detail::safetensors_native_dtype<T>()));
        char* p = data_ + e.begin;
        if (reinterpret_cast<std::uintptr_t>(p) % alignof(T) != 0)
            fail(fmt::format("tensor '{}' starts at byte {} of the data section, not aligned for {}-byte elements", name, e.begin, alignof(T)));
        return tensor_view<T, cpu>(reinterpret_cast<T*>(p), e.shape);
    }
    /// What owns the bytes that view() points into.
    std::shared_ptr<const void> storage() const { return storage_; }

    /// Copies the tensor `name`, converted to T, into dst; the shapes must be equal.
    template <class T, device D>
    void read_into(const std::string& name, const tensor_view<T, D>& dst) const {
        const auto& e = entry(name);
        if (!(e.shape == dst.shape()))
            fail(fmt::format("tensor '{}' has shape {} in the file, the destination has shape {}", name, e.shape, dst.shape()));
        const char* src = data_ + e.begin;
        const std::size_t n = static_cast<std::size_t>(e.shape.numel());
        std::vector<T> host(n);
        if (e.dtype == detail::safetensors_native_dtype<T>()) {
            if (n) std::memcpy(host.data(), src, n * sizeof(T));
        } else if constexpr (std::is_integral_v<T>) {
            // Integer tensors (class labels): only from integer dtypes, and only values T can hold.
            if (e.dtype != "I64" && e.dtype != "I32") fail(fmt::format("tensor '{}' is {}, an integer tensor (I32 or I64) is needed", name, e.dtype));
            for (std::size_t i = 0; i < n; ++i) {
                const std::int64_t v = e.dtype == "I64" ? load<std::int64_t>(src + 8 * i) : load<std::int32_t>(src + 4 * i);
                if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max())
                    fail(fmt::format("tensor '{}' holds {} at element {}, out of range for the destination", name, v, i));
                host[i] = static_cast<T>(v);
            }
        } else if constexpr (std::is_same_v<T, bfloat16>) {
            // Another dtype into bf16: through float, rounded to nearest even (F64 via float: a
            // double rounding that can differ from direct rounding only on exact float ties).
            for (std::size_t i = 0; i < n; ++i) host[i] = bfloat16(static_cast<float>(element_as_double(e.dtype, src, i)));
        } else {
            for (std::size_t i = 0; i < n; ++i) host[i] = static_cast<T>(element_as_double(e.dtype, src, i));
        }
        memory<D>::copy_from_host(dst.data(), host.data(), n * sizeof(T));
    }

    [[noreturn]] void fail(const std::string& cause) const {
        throw io_error(fmt::format("safetensors: {}: {}", path_.string(), cause));
    }

private:
    static double element_as_double(const std::string& dtype, const char* src, std::size_t i) {
        if (dtype == "F64") return load<double>(src + 8 * i);
        if (dtype == "F32") return load<float>(src + 4 * i);
        if (dtype == "F16") return detail::half_to_float(load<std::uint16_t>(src + 2 * i));
        if (dtype == "I64") return double(load<std::int64_t>(src + 8 * i));
        if (dtype == "I32") return double(load<std::int32_t>(src + 4 * i));
        return detail::bfloat16_to_float(load<std::uint16_t>(src + 2 * i));
    }
    template <class U>
    static U load(const char* p) {
        U v;
        std::memcpy(&v, p, sizeof(U));
        return v;
    }

    void parse(char* bytes, std::size_t size) {
        if (size < 8) fail(fmt::format("file is {} bytes, shorter than the 8-byte header length", size));
        const std::uint64_t header_len = load<std::uint64_t>(bytes);
        if (header_len > size - 8)
            fail(fmt::format("header length {} exceeds the {} bytes that follow it (file size {})", header_len, size - 8, size));
        const char* header_begin = bytes + 8;
        nlohmann::json header;
        try {
            header = nlohmann::json::parse(header_begin, header_begin + header_len);
        } catch (const nlohmann::json::exception& e) {
            fail(fmt::format("malformed JSON header: {}", e.what()));
        }
        if (!header.is_object()) fail(fmt::format("the JSON header is not an object (it is {})", header.type_name()));

        const std::size_t data_size = size - 8 - static_cast<std::size_t>(header_len);
        for (auto& [name, value] : header.items()) {
            if (name == "__metadata__") {
                if (!value.is_object()) fail("__metadata__ is not an object");
                for (auto& [k, v] : value.items()) {
                    if (!v.is_string()) fail(fmt::format("__metadata__ value of '{}' is not a string", k));
                    metadata_.emplace(k, v.get<std::string>());
                }
                continue;
            }
            entries_.emplace(name, parse_entry(name, value, data_size));
        }
        check_layout(data_size);
        data_ = bytes + 8 + header_len;
        data_offset_ = 8 + static_cast<std::size_t>(header_len);
        verify_checksums();
    }

    /// XXH3-64 of bytes [begin, end) of the data section. A mapped file's bytes are read through
    /// the file instead of the mapping: touching every page would make the whole file resident in
    /// this process, which mapping avoids (a latent cache larger than memory).
    std::uint64_t range_checksum(std::size_t begin, std::size_t end) const {
        if (!mapped_) return xxh3_64(data_ + begin, end - begin);
        std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path_.c_str(), "rb"), &std::fclose);
        if (!f) fail(fmt::format("cannot open to verify: {}", std::strerror(errno)));
        if (::fseeko(f.get(), static_cast<::off_t>(data_offset_ + begin), SEEK_SET) != 0)
            fail(fmt::format("cannot seek to verify: {}", std::strerror(errno)));
        xxh3_64_stream h;
        std::vector<char> buf(std::size_t{1} << 20);
        for (std::size_t left = end - begin; left > 0;) {
            const std::size_t n = std::fread(buf.data(), 1, std::min(left, buf.size()), f.get());
            if (n == 0) fail("the file changed while it was verified (a read came short)");
            h.update(buf.data(), n);
            left -= n;
        }
        return h.digest();
    }

    /// Checks every tensor's bytes and the other metadata against the checksums in the metadata,
    /// when there are any.
    void verify_checksums() {
        const auto it = metadata_.find(std::string(checksum_metadata_key));
        if (it == metadata_.end()) return;
        const auto bad = [&](const std::string& why) { fail(fmt::format("metadata '{}': {}", checksum_metadata_key, why)); };
        nlohmann::json sums;
        try {
            sums = nlohmann::json::parse(it->second);
        } catch (const nlohmann::json::exception& e) {
            bad(fmt::format("malformed JSON: {}", e.what()));
        }
        if (!sums.is_object()) bad("not a JSON object");
        const auto stored = [&](const std::string& name) {
            if (!sums.contains(name)) bad(fmt::format("no checksum for '{}'", name));
            const auto& v = sums[name];
            const auto h = v.is_string() ? parse_checksum_text(v.get<std::string>()) : std::nullopt;
            if (!h) bad(fmt::format("the checksum of '{}' is {}, not 16 hexadecimal digits", name, v.dump()));
            return *h;
        };
        for (auto& [name, value] : sums.items())
            if (name != "__metadata__" && !entries_.count(name)) bad(fmt::format("a checksum for '{}', which is not a tensor of the file", name));
        const std::uint64_t meta_stored = stored("__metadata__"), meta_computed = metadata_checksum(metadata_);
        if (meta_stored != meta_computed)
            fail(fmt::format("the metadata fails its checksum (stored {}, computed {}): the file is damaged", checksum_text(meta_stored),
                             checksum_text(meta_computed)));
        for (auto& [name, e] : entries_) {
            const std::uint64_t want = stored(name), got = range_checksum(e.begin, e.end);
            if (want != got)
                fail(fmt::format("tensor '{}' fails its checksum (stored {}, computed {}): the file is damaged", name, checksum_text(want),
                                 checksum_text(got)));
        }
        checksummed_ = true;
    }

    safetensors_entry parse_entry(const std::string& name, const nlohmann::json& v, std::size_t data_size) const {
        auto bad = [&](const std::string& why) { fail(fmt::format("tensor '{}': {}", name, why)); };
        if (!v.is_object()) bad("entry is not an object");
        if (!v.contains("dtype") || !v["dtype"].is_string()) bad("missing or non-string \"dtype\"");
        if (!v.contains("shape") || !v["shape"].is_array()) bad("missing or non-array \"shape\"");
        if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
            bad("\"data_offsets\" must be an array [begin, end]");
        safetensors_entry e;
        e.dtype = v["dtype"].get<std::string>();
        const std::size_t elem = detail::safetensors_dtype_size(e.dtype);
        if (elem == 0) bad(fmt::format("unknown dtype '{}' (readable: F16, BF16, F32, F64, I32, I64)", e.dtype));
        if (v["shape"].size() > static_cast<std::size_t>(max_rank))
            bad(fmt::format("rank {} exceeds the maximum rank {}", v["shape"].size(), max_rank));
        std::uint64_t numel = 1;
        for (auto& d : v["shape"]) {
            if (!d.is_number_unsigned()) bad(fmt::format("shape entry {} is not a non-negative integer", d.dump()));
            const auto extent = d.get<std::uint64_t>();
            if (extent > 0 && numel > (std::uint64_t{1} << 48) / extent) bad(fmt::format("shape {} is too large", v["shape"].dump()));
            numel *= extent;
            e.shape.push_back(static_cast<std::int64_t>(extent));
        }
        for (auto& o : v["data_offsets"])
            if (!o.is_number_unsigned()) bad(fmt::format("data_offsets {} are not non-negative integers", v["data_offsets"].dump()));
        const auto begin = v["data_offsets"][0].get<std::uint64_t>(), end = v["data_offsets"][1].get<std::uint64_t>();
        if (end < begin) bad(fmt::format("data_offsets [{}, {}] end before they begin", begin, end));
        if (end > data_size)
            bad(fmt::format("data_offsets [{}, {}] out of range: the data section holds {} bytes", begin, end, data_size));
        if (end - begin != numel * elem)
            bad(fmt::format("data_offsets [{}, {}] hold {} bytes, but dtype {} × shape {} needs {}", begin, end, end - begin,
                            e.dtype, e.shape, numel * elem));
        e.begin = static_cast<std::size_t>(begin);
        e.end = static_cast<std::size_t>(end);
        return e;
    }

    /// The tensors must tile the data section exactly: no overlap, no gap, no trailing bytes
    /// (the reference implementation's rule).
    void check_layout(std::size_t data_size) const {
        std::vector<std::pair<const std::string*, const safetensors_entry*>> order;
        for (auto& [name, e] : entries_) order.emplace_back(&name, &e);
        std::sort(order.begin(), order.end(), [](auto& a, auto& b) {
            return std::pair(a.second->begin, a.second->end) < std::pair(b.second->begin, b.second->end);
        });
        std::size_t covered = 0;
        const std::string* previous = nullptr;
        for (auto& [name, e] : order) {
            if (e->begin < covered)
                fail(fmt::format("tensors '{}' and '{}' overlap: data_offsets [{}, {}] of '{}' start before {}, where '{}' ends",
                                 *previous, *name, e->begin, e->end, *name, covered, *previous));
            if (e->begin > covered)
                fail(fmt::format("gap in the data section: bytes [{}, {}) before tensor '{}' belong to no tensor", covered, e->begin,
                                 *name));
            covered = e->end;
            previous = name;
        }
        if (covered != data_size)
            fail(fmt::format("the data section holds {} bytes, the tensors cover {}", data_size, covered));
    }

    std::filesystem::path path_;
    std::map<std::string, safetensors_entry> entries_;
    metadata_map metadata_;
    std::shared_ptr<const void> storage_;  // the file's bytes: a std::vector<char> or a mapped_file
    char* data_ = nullptr;                 // the data section, inside storage_
    std::size_t data_offset_ = 0;          // of the data section in the file
    bool mapped_ = false;
    bool checksummed_ = false;
};

/// For the loaders of files vediff wrote and trusts (checkpoints, latent caches, feature
/// statistics): one line on stderr, once per file and process, when `f` carries no checksums
/// (written by PyTorch or by a vediff before them), so that its data loads unverified.
inline void note_if_unverified(const safetensors_file& f) {
    if (f.checksummed()) return;
    static std::mutex mutex;
    static std::set<std::string> told;
    const std::lock_guard lock(mutex);
    if (told.insert(f.path().string()).second)
        fmt::print(stderr, "note: {}: no vediff checksums (written by PyTorch or an older vediff): its data is loaded unverified\n",
                   f.path().string());
}

/// A tensor of a file being written, in the order of the data section.
struct safetensors_layout_entry {
    std::string name;
    std::string dtype;  // "F32", "F64", "I32", "I64"
    tensor_shape shape;
};

/// The bytes before the data section of a file whose tensors lie in the data section in the
/// given order: the header's 8-byte length, then its JSON padded with spaces so that the data
/// section starts 8-byte aligned. Lets a writer stream a tensor it does not hold whole.
inline std::string safetensors_header(const std::vector<safetensors_layout_entry>& layout, const metadata_map& metadata = {}) {
    nlohmann::json header = nlohmann::json::object();
    std::size_t offset = 0;
    for (const auto& e : layout) {
        if (e.name == "__metadata__") throw std::invalid_argument("safetensors: '__metadata__' is reserved");
        if (header.contains(e.name)) throw std::invalid_argument(fmt::format("safetensors: tensor '{}' added twice", e.name));
        const std::size_t bytes = static_cast<std::size_t>(e.shape.numel()) * detail::safetensors_dtype_size(e.dtype);
        if (bytes == 0 && e.shape.numel() != 0) throw std::invalid_argument(fmt::format("safetensors: tensor '{}' has dtype {}, which vediff does not write", e.name, e.dtype));
        header[e.name] = {{"dtype", e.dtype},
                          {"shape", std::vector<std::int64_t>(e.shape.begin(), e.shape.end())},
                          {"data_offsets", {offset, offset + bytes}}};
        offset += bytes;
    }
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    const std::uint64_t n = text.size();
    std::string out(sizeof n, '\0');
    std::memcpy(out.data(), &n, sizeof n);  // little-endian hosts only, as the reader assumes
    return out + text;
}

/// The value of the checksum metadata key (io/checksum.hpp) for tensors with the given checksums
/// and the given other metadata.
inline std::string checksum_metadata_value(const std::map<std::string, std::uint64_t>& tensor_checksums, const metadata_map& metadata) {
    nlohmann::json sums = nlohmann::json::object();
    for (const auto& [name, h] : tensor_checksums) sums[name] = checksum_text(h);
    sums["__metadata__"] = checksum_text(metadata_checksum(metadata));
    return sums.dump();
}

/// `metadata` with the checksum key set for tensors with the given checksums.
inline metadata_map with_checksums(metadata_map metadata, const std::map<std::string, std::uint64_t>& tensor_checksums) {
    if (metadata.count(std::string(checksum_metadata_key)))
        throw std::invalid_argument(fmt::format("safetensors: metadata key '{}' is reserved", checksum_metadata_key));
    const std::string value = checksum_metadata_value(tensor_checksums, metadata);
    metadata.emplace(std::string(checksum_metadata_key), value);
    return metadata;
}

/// Collects named tensors (copied to the host as F32, F64, BF16, I32 or I64) and writes them atomically,
/// with their checksums.
class safetensors_writer {
public:
    template <class T, device D>
    void add(const std::string& name, const tensor_view<T, D>& t) {
        if (name == "__metadata__") throw std::invalid_argument("safetensors_writer: '__metadata__' is reserved");
        if (items_.count(name)) throw std::invalid_argument(fmt::format("safetensors_writer: tensor '{}' added twice", name));
        const auto host = t.to_vector();
        item it{detail::safetensors_dtype_of<T>(), t.shape(), std::vector<char>(host.size() * sizeof(T))};
        if (!host.empty()) std::memcpy(it.bytes.data(), host.data(), it.bytes.size());
        items_.emplace(name, std::move(it));
    }
    /// A float tensor stored as BF16, each value rounded to nearest even (half the bytes; what
    /// PyTorch's bf16 checkpoints hold).
    template <device D>
    void add_as_bf16(const std::string& name, const tensor_view<float, D>& t) {
        const auto host = t.to_vector();
        tensor<bfloat16, cpu> rounded(t.shape());
        round_to_bfloat16(rounded.data(), host.data(), static_cast<std::int64_t>(host.size()));
        add(name, rounded.view());
    }
    void add_metadata(const std::string& key, const std::string& value) {
        if (key == checksum_metadata_key) throw std::invalid_argument(fmt::format("safetensors_writer: metadata key '{}' is reserved", key));
        metadata_[key] = value;
    }

    void write(const std::filesystem::path& path) const {
        std::vector<safetensors_layout_entry> layout;
        std::map<std::string, std::uint64_t> sums;
        for (auto& [name, it] : items_) {
            layout.push_back({name, it.dtype, it.shape});
            sums[name] = xxh3_64(it.bytes.data(), it.bytes.size());
        }
        const std::string header = safetensors_header(layout, with_checksums(metadata_, sums));
        write_file_atomically(path, [&](atomic_file& f) {
            f.write(header);
            for (auto& [name, it] : items_) f.write(it.bytes.data(), it.bytes.size());
        });
    }

private:
    struct item {
        const char* dtype;
        tensor_shape shape;
        std::vector<char> bytes;
    };
    std::map<std::string, item> items_;
    metadata_map metadata_;
};

/// Writes a map name → tensor.
template <class T, device D>
void save_tensors(const std::filesystem::path& path, const std::map<std::string, tensor<T, D>>& tensors,
                  const metadata_map& metadata = {}) {
    safetensors_writer w;
    for (auto& [name, t] : tensors) w.add(name, t.view());
    for (auto& [k, v] : metadata) w.add_metadata(k, v);
    w.write(path);
}

/// Reads every tensor of a file, converted to T.
template <class T, device D = cpu>
std::map<std::string, tensor<T, D>> load_tensors(const std::filesystem::path& path) {
    safetensors_file f(path);
    std::map<std::string, tensor<T, D>> out;
    for (auto& [name, e] : f.entries()) out.emplace(name, f.get<T, D>(name));
    return out;
}

/// Saves every parameter of a model (trainable or not) under its state_dict name.
template <class Model>
void save_state_dict(const std::filesystem::path& path, Model& model, const metadata_map& metadata = {}) {
    safetensors_writer w;
    for (auto& [name, p] : nn::named_parameters(model)) w.add(name, p->value.view());
    for (auto& [k, v] : metadata) w.add_metadata(k, v);
    w.write(path);
}

/// Loads every parameter of a model from an opened file written by save_state_dict (or PyTorch's
/// safetensors.torch.save_file). Every parameter must be present with its exact shape; tensors
/// the model lacks are an error unless strict is false. All problems are reported together, and
/// the model is left untouched when there is any. Returns the file's metadata.
template <class Model>
metadata_map load_state_dict(const safetensors_file& f, Model& model, bool strict = true) {
    const auto params = nn::named_parameters(model);
    std::vector<std::string> problems;
    std::map<std::string, bool> used;
    for (auto& [name, p] : params) {
        if (!f.contains(name)) {
            problems.push_back(fmt::format("tensor '{}' {} is missing from the file", name, p->shape()));
            continue;
        }
        used[name] = true;
        const auto& e = f.entry(name);
        if (!(e.shape == p->shape()))
            problems.push_back(fmt::format("tensor '{}' has shape {} in the file but {} in the model", name, e.shape, p->shape()));
    }
    if (strict) {
        std::vector<std::string> unexpected;
        for (auto& name : f.names())
            if (!used.count(name)) unexpected.push_back("'" + name + "'");
        if (!unexpected.empty())
            problems.push_back(fmt::format("unexpected tensors in the file (not in the model): {}", fmt::join(unexpected, ", ")));
    }
    if (!problems.empty())
        throw io_error(fmt::format("load_state_dict: {}: {}", f.path().string(), fmt::join(problems, "; ")));
    for (auto& [name, p] : params) f.read_into(name, p->value.view());
    return f.metadata();
}

/// The same from a path.
template <class Model>
metadata_map load_state_dict(const std::filesystem::path& path, Model& model, bool strict = true) {
    return load_state_dict(safetensors_file(path), model, strict);
}

} // namespace vediff::io
