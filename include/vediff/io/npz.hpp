#pragma once
// NumPy's .npz archives: a zip file (read and written by Debian's libzip) whose members `<name>.npy`
// each hold one array in the .npy format (numpy/lib/format.py, NEP 1): the magic "\x93NUMPY", a
// version byte pair (1.0: 2-byte little-endian header length; 2.0 and 3.0: 4-byte), a header that
// is a Python dict literal {'descr': ..., 'fortran_order': ..., 'shape': (...), } padded with spaces
// and ended by '\n', then the raw data. np.savez stores members uncompressed, np.savez_compressed
// deflates them; both are read.
//
// The field's evaluation files are .npz: pytorch-fid's statistics (`mu`, `sigma`), ADM's reference
// batches (guided-diffusion evaluations/evaluator.py: `arr_0` uint8 images (N, H, W, 3) and/or
// `mu`, `sigma`, `mu_s`, `sigma_s`) and ADM's sample batches (`arr_0`, `arr_1` labels), which
// save_samples_npz writes from vediff's images (quantized as vediff's metrics quantize, round half
// up, or as ADM's image_sample.py does, truncating).
//
// Read: dtypes <f4, <f8, |u1, <i4, <i8 in C order (fortran_order True is refused by name).
// Every problem is an io_error naming the file, the member and the cause. No allocation follows a
// size written in the file: member data is read in chunks as it arrives (libzip checks the CRC at
// its end), and a tensor is allocated only once the bytes read match the header's shape × dtype.
#include <algorithm>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <zip.h>

#include "vediff/core/error.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/io/atomic_file.hpp"
#include "vediff/metrics/eight_bit_images.hpp"

namespace vediff::io {

static_assert(std::endian::native == std::endian::little, ".npy data is read as little-endian; vediff assumes a little-endian host");

/// The element types of .npy arrays vediff reads and writes.
enum class npy_dtype { float32, float64, uint8, int32, int64 };

/// numpy's descr of a dtype, as np.save writes it.
inline const char* npy_descr(npy_dtype t) {
    switch (t) {
    case npy_dtype::float32: return "<f4";
    case npy_dtype::float64: return "<f8";
    case npy_dtype::uint8: return "|u1";
    case npy_dtype::int32: return "<i4";
    case npy_dtype::int64: return "<i8";
    }
    return "?";
}

inline std::size_t npy_itemsize(npy_dtype t) {
    switch (t) {
    case npy_dtype::float32: return 4;
    case npy_dtype::float64: return 8;
    case npy_dtype::uint8: return 1;
    case npy_dtype::int32: return 4;
    case npy_dtype::int64: return 8;
    }
    return 0;
}

/// The dtype a tensor of T is written as.
template <class T>
constexpr npy_dtype npy_dtype_of() {
    if constexpr (std::is_same_v<T, float>) return npy_dtype::float32;
    else if constexpr (std::is_same_v<T, double>) return npy_dtype::float64;
    else if constexpr (std::is_same_v<T, std::uint8_t>) return npy_dtype::uint8;
    else if constexpr (std::is_same_v<T, std::int32_t>) return npy_dtype::int32;
    else {
        static_assert(std::is_same_v<T, std::int64_t>, "npz: vediff stores float, double, uint8, int32 or int64 arrays");
        return npy_dtype::int64;
    }
}

/// What a member's .npy header says.
struct npy_header {
    npy_dtype dtype = npy_dtype::float32;
    tensor_shape shape;
    std::size_t data_offset = 0;  // bytes before the data: magic, version, length field, header
};

namespace detail {

/// Parses the dict literal of a .npy header. fail(cause) must throw.
template <class Fail>
npy_header parse_npy_dict(std::string_view text, Fail&& fail) {
    std::size_t pos = 0;
    const auto skip_space = [&] {
        while (pos < text.size() && std::isspace(static_cast<unsigned char>(text[pos]))) ++pos;
    };
    const auto expect = [&](char c, const char* where) {
        skip_space();
        if (pos >= text.size() || text[pos] != c)
            fail(fmt::format("malformed .npy header: expected '{}' {} at character {} of \"{}\"", c, where, pos, text));
        ++pos;
    };
    const auto peek = [&]() -> char {
        skip_space();
        return pos < text.size() ? text[pos] : '\0';
    };
    const auto quoted = [&]() -> std::string {
        skip_space();
        if (pos >= text.size() || (text[pos] != '\'' && text[pos] != '"'))
            fail(fmt::format("malformed .npy header: expected a quoted string at character {} of \"{}\"", pos, text));
        const char quote = text[pos++];
        const auto end = text.find(quote, pos);
        if (end == std::string_view::npos) fail(fmt::format("malformed .npy header: unterminated string in \"{}\"", text));
        std::string s(text.substr(pos, end - pos));
        pos = end + 1;
        return s;
    };

    std::optional<std::string> descr;
    std::optional<bool> fortran_order;
    std::optional<std::vector<std::int64_t>> dims;
    expect('{', "at the start of the header dict");
    while (peek() != '}') {
        const std::string key = quoted();
        expect(':', fmt::format("after the key '{}'", key).c_str());
        if (key == "descr") {
            if (descr) fail("malformed .npy header: 'descr' appears twice");
            skip_space();
            if (peek() != '\'' && peek() != '"')
                fail(fmt::format("unsupported dtype: 'descr' is not a simple type string (a structured dtype?) in \"{}\"", text));
            descr = quoted();
        } else if (key == "fortran_order") {
            if (fortran_order) fail("malformed .npy header: 'fortran_order' appears twice");
            skip_space();
            if (text.substr(pos, 4) == "True") fortran_order = true, pos += 4;
            else if (text.substr(pos, 5) == "False") fortran_order = false, pos += 5;
            else fail(fmt::format("malformed .npy header: 'fortran_order' is neither True nor False in \"{}\"", text));
        } else if (key == "shape") {
            if (dims) fail("malformed .npy header: 'shape' appears twice");
            expect('(', "opening the shape tuple");
            dims.emplace();
            while (peek() != ')') {
                skip_space();
                const std::size_t begin = pos;
                std::int64_t d = 0;
                while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) {
                    if (d > (std::numeric_limits<std::int64_t>::max() - 9) / 10)
                        fail(fmt::format("malformed .npy header: a shape extent overflows 64 bits in \"{}\"", text));
                    d = d * 10 + (text[pos++] - '0');
                }
                if (pos == begin) fail(fmt::format("malformed .npy header: a shape extent is not a non-negative integer in \"{}\"", text));
                dims->push_back(d);
                if (peek() == ',') ++pos;
                else if (peek() != ')') fail(fmt::format("malformed .npy header: expected ',' or ')' in the shape of \"{}\"", text));
            }
            ++pos;
        } else {
            fail(fmt::format("malformed .npy header: unexpected key '{}'", key));
        }
        if (peek() == ',') ++pos;
        else if (peek() != '}') fail(fmt::format("malformed .npy header: expected ',' or '}}' at character {} of \"{}\"", pos, text));
    }
    if (!descr || !fortran_order || !dims)
        fail(fmt::format("malformed .npy header: it needs 'descr', 'fortran_order' and 'shape', got \"{}\"", text));

    npy_header h;
    if (*descr == "<f4") h.dtype = npy_dtype::float32;
    else if (*descr == "<f8") h.dtype = npy_dtype::float64;
    else if (*descr == "|u1" || *descr == "<u1") h.dtype = npy_dtype::uint8;
    else if (*descr == "<i4") h.dtype = npy_dtype::int32;
    else if (*descr == "<i8") h.dtype = npy_dtype::int64;
    else fail(fmt::format("unsupported dtype '{}' (vediff reads <f4, <f8, |u1, <i4 and <i8)", *descr));
    if (*fortran_order)
        fail("fortran_order is True: vediff reads C-order arrays only (save with np.ascontiguousarray)");
    if (dims->size() > static_cast<std::size_t>(max_rank))
        fail(fmt::format("the array has rank {}, more than vediff's maximum rank {}", dims->size(), max_rank));
    std::uint64_t numel = 1;
    for (auto d : *dims) {
        if (d != 0 && numel > std::numeric_limits<std::uint64_t>::max() / 16 / static_cast<std::uint64_t>(d))
            fail(fmt::format("the shape in \"{}\" overflows 64-bit sizes", text));
        numel *= static_cast<std::uint64_t>(d);
        h.shape.push_back(d);
    }
    return h;
}

struct zip_archive_closer {
    void operator()(zip_t* z) const { zip_discard(z); }
};
struct zip_member_closer {
    void operator()(zip_file_t* f) const { zip_fclose(f); }
};
struct zip_source_freer {
    void operator()(zip_source_t* s) const { zip_source_free(s); }
};

/// libzip's text for an error code.
inline std::string zip_error_text(int code) {
    zip_error_t error;
    zip_error_init_with_code(&error, code);
    std::string text = zip_error_strerror(&error);
    zip_error_fini(&error);
    return text;
}

template <class U>
U load_le(const char* p) {
    U v;
    std::memcpy(&v, p, sizeof(U));
    return v;
}

} // namespace detail

/// An .npz archive opened for reading; members are read when asked for.
class npz_file {
public:
    explicit npz_file(std::filesystem::path path) : path_(std::move(path)) {
        std::error_code ec;
        if (std::filesystem::is_directory(path_, ec)) fail("cannot open: it is a directory");
        int code = 0;
        archive_.reset(zip_open(path_.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &code));
        if (!archive_) {
            if (code == ZIP_ER_NOZIP || code == ZIP_ER_INCONS)
                fail(fmt::format("not a readable zip archive, so not an .npz (libzip: {}); the file is truncated, corrupt or of another kind",
                                 detail::zip_error_text(code)));
            fail(fmt::format("cannot open (libzip: {})", detail::zip_error_text(code)));
        }
        const zip_int64_t n = zip_get_num_entries(archive_.get(), 0);
        for (zip_int64_t i = 0; i < n; ++i) {
            const char* name = zip_get_name(archive_.get(), static_cast<zip_uint64_t>(i), ZIP_FL_ENC_RAW);
            if (!name) continue;
            const std::string_view member(name);
            if (member.size() > 4 && member.substr(member.size() - 4) == ".npy") names_.emplace_back(member.substr(0, member.size() - 4));
        }
    }

    const std::filesystem::path& path() const { return path_; }
    /// The array names (members `<name>.npy`), in archive order.
    const std::vector<std::string>& names() const { return names_; }
    bool contains(const std::string& name) const { return std::find(names_.begin(), names_.end(), name) != names_.end(); }

    /// The header of array `name`, read without its data (e.g. the image count of a reference batch).
    npy_header header(const std::string& name) const {
        auto member = open_member(name);
        std::vector<char> bytes;
        read_prefix(name, member.get(), bytes);
        return parse_header(name, bytes);
    }

    /// The array `name` converted to T: float or double from any supported dtype; an integer T
    /// (uint8, int32, int64) only from integer dtypes and only with values T holds.
    template <class T>
    tensor<T> get(const std::string& name) const {
        static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, std::uint8_t> ||
                          std::is_same_v<T, std::int32_t> || std::is_same_v<T, std::int64_t>,
                      "npz_file::get: T is float, double, uint8, int32 or int64");
        auto member = open_member(name);
        std::vector<char> bytes;
        read_prefix(name, member.get(), bytes);
        const npy_header h = parse_header(name, bytes);
        read_rest(name, member.get(), bytes);
        const std::size_t data_bytes = bytes.size() - h.data_offset;
        const std::uint64_t numel = static_cast<std::uint64_t>(h.shape.numel());
        if (numel * npy_itemsize(h.dtype) != data_bytes)
            fail_member(name, fmt::format("the header's shape {} of {} needs {} bytes of data, the member holds {}", h.shape,
                                          npy_descr(h.dtype), numel * npy_itemsize(h.dtype), data_bytes));
        if constexpr (std::is_integral_v<T>)
            if (h.dtype == npy_dtype::float32 || h.dtype == npy_dtype::float64)
                fail_member(name, fmt::format("it holds {} values, an integer array ({}) is needed", npy_descr(h.dtype), npy_descr(npy_dtype_of<T>())));
        tensor<T> t(h.shape);
        const char* src = bytes.data() + h.data_offset;
        T* dst = t.data();
        const std::size_t n = static_cast<std::size_t>(numel);
        if (h.dtype == npy_dtype_of<T>()) {
            if (n) std::memcpy(dst, src, n * sizeof(T));
            return t;
        }
        for (std::size_t i = 0; i < n; ++i) {
            switch (h.dtype) {
            case npy_dtype::float32: dst[i] = static_cast<T>(detail::load_le<float>(src + 4 * i)); break;
            case npy_dtype::float64: dst[i] = static_cast<T>(detail::load_le<double>(src + 8 * i)); break;
            case npy_dtype::uint8: dst[i] = static_cast<T>(static_cast<std::uint8_t>(src[i])); break;
            case npy_dtype::int32: dst[i] = integer_as<T>(name, detail::load_le<std::int32_t>(src + 4 * i), i); break;
            case npy_dtype::int64: dst[i] = integer_as<T>(name, detail::load_le<std::int64_t>(src + 8 * i), i); break;
            }
        }
        return t;
    }

    [[noreturn]] void fail(const std::string& cause) const { throw io_error(fmt::format("npz: {}: {}", path_.string(), cause)); }
    [[noreturn]] void fail_member(const std::string& name, const std::string& cause) const {
        throw io_error(fmt::format("npz: {}: member '{}.npy': {}", path_.string(), name, cause));
    }

private:
    /// Bytes taken from a member per read: the buffer grows only with data that has arrived.
    static constexpr std::size_t chunk_bytes = std::size_t{1} << 20;
    /// The .npy magic, version and header-length field of versions 2.0 and 3.0.
    static constexpr std::size_t npy_prefix_bytes = 12;

    template <class T, class I>
    T integer_as(const std::string& name, I v, std::size_t i) const {
        if constexpr (std::is_integral_v<T>) {
            if (!std::in_range<T>(v)) fail_member(name, fmt::format("element {} is {}, out of range for {}", i, v, npy_descr(npy_dtype_of<T>())));
        }
        return static_cast<T>(v);
    }

    std::unique_ptr<zip_file_t, detail::zip_member_closer> open_member(const std::string& name) const {
        if (!contains(name)) {
            std::string members;
            for (const auto& n : names_) members += (members.empty() ? "" : ", ") + n;
            fail(fmt::format("no array named '{}' (the archive holds: {})", name, members.empty() ? "no .npy members" : members));
        }
        const std::string member = name + ".npy";
        std::unique_ptr<zip_file_t, detail::zip_member_closer> f(zip_fopen(archive_.get(), member.c_str(), ZIP_FL_ENC_RAW));
        if (!f) fail_member(name, fmt::format("cannot open (libzip: {})", zip_strerror(archive_.get())));
        return f;
    }

    /// Appends up to `bytes` more of the member to out; returns how many arrived.
    std::size_t read_some(const std::string& name, zip_file_t* f, std::vector<char>& out, std::size_t bytes) const {
        std::size_t got = 0;
        while (got < bytes) {
            const std::size_t want = std::min(chunk_bytes, bytes - got);
            const std::size_t old = out.size();
            out.resize(old + want);
            const zip_int64_t n = zip_fread(f, out.data() + old, want);
            if (n < 0) {
                out.resize(old);
                fail_member(name, fmt::format("cannot read its data (libzip: {}); the archive is corrupt or truncated", zip_file_strerror(f)));
            }
            out.resize(old + static_cast<std::size_t>(n));
            got += static_cast<std::size_t>(n);
            if (n == 0) break;
        }
        return got;
    }

    /// Reads the magic, the version and the whole header into bytes.
    void read_prefix(const std::string& name, zip_file_t* f, std::vector<char>& bytes) const {
        read_some(name, f, bytes, npy_prefix_bytes);
        if (bytes.size() < 8 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0)
            fail_member(name, "bad magic: not a .npy array (it does not start with \\x93NUMPY)");
        const int major = static_cast<unsigned char>(bytes[6]), minor = static_cast<unsigned char>(bytes[7]);
        if (minor != 0 || major < 1 || major > 3) fail_member(name, fmt::format("unsupported .npy version {}.{} (1.0, 2.0 and 3.0 are read)", major, minor));
        const std::size_t length_bytes = major == 1 ? 2 : 4;
        if (bytes.size() < 8 + length_bytes) fail_member(name, fmt::format("truncated: {} bytes, the .npy prefix needs {}", bytes.size(), 8 + length_bytes));
        const std::size_t header_length = major == 1 ? detail::load_le<std::uint16_t>(bytes.data() + 8) : detail::load_le<std::uint32_t>(bytes.data() + 8);
        const std::size_t data_offset = 8 + length_bytes + header_length;
        if (bytes.size() < data_offset) read_some(name, f, bytes, data_offset - bytes.size());
        if (bytes.size() < data_offset)
            fail_member(name, fmt::format("truncated: the header length says {} bytes, the member ends after {}", header_length, bytes.size() - 8 - length_bytes));
    }

    npy_header parse_header(const std::string& name, const std::vector<char>& bytes) const {
        const int major = static_cast<unsigned char>(bytes[6]);
        const std::size_t length_bytes = major == 1 ? 2 : 4;
        const std::size_t header_length = major == 1 ? detail::load_le<std::uint16_t>(bytes.data() + 8) : detail::load_le<std::uint32_t>(bytes.data() + 8);
        std::string_view text(bytes.data() + 8 + length_bytes, header_length);
        while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);  // numpy's padding
        npy_header h = detail::parse_npy_dict(text, [&](const std::string& cause) { fail_member(name, cause); });
        h.data_offset = 8 + length_bytes + header_length;
        return h;
    }

    /// Reads the member to its end, in reads that double from 64 KiB up to chunk_bytes (a small
    /// member costs no megabyte buffer).
    void read_rest(const std::string& name, zip_file_t* f, std::vector<char>& bytes) const {
        for (std::size_t step = std::size_t{1} << 16; read_some(name, f, bytes, step) == step;) step = std::min(2 * step, chunk_bytes);
    }

    std::filesystem::path path_;
    std::unique_ptr<zip_t, detail::zip_archive_closer> archive_;
    std::vector<std::string> names_;
};

/// How npz_writer stores its members.
enum class npz_compression {
    stored,   // np.savez
    deflated  // np.savez_compressed
};

/// Collects arrays and writes them as an .npz archive (numpy reads it with np.load).
class npz_writer {
public:
    /// Adds the array `name` (a copy of t, from any device); names must be unique.
    template <class T, device D>
    void add(const std::string& name, const tensor_view<T, D>& t) {
        const auto host = t.to_vector();
        add(name, t.shape(), std::span<const std::remove_const_t<T>>(host));
    }

    /// Adds the array `name` of the given shape from host values.
    template <class T>
    void add(const std::string& name, const tensor_shape& shape, std::span<const T> values) {
        if (name.empty() || name.find('/') != std::string::npos)
            throw std::invalid_argument(fmt::format("npz_writer::add: '{}' is not a usable array name", name));
        for (const auto& m : members_)
            if (m.first == name) throw std::invalid_argument(fmt::format("npz_writer::add: an array named '{}' was already added", name));
        if (values.size() != static_cast<std::size_t>(shape.numel()))
            throw shape_error(fmt::format("npz_writer::add: {} values for array '{}' of shape {}", values.size(), name, shape));
        std::string dims;
        for (auto d : shape) dims += fmt::format("{}, ", d);
        if (shape.rank() > 0) dims.resize(dims.size() - (shape.rank() == 1 ? 1 : 2));  // "(5,)" for one axis, "(2, 3)" else
        std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}", npy_descr(npy_dtype_of<T>()), dims);
        // Spaces and a newline so that the data starts at a multiple of 64 bytes, as numpy pads.
        const bool long_header = header.size() + 1 + 10 > 65535;
        const std::size_t prefix = long_header ? 12 : 10;
        header.append((64 - (prefix + header.size() + 1) % 64) % 64, ' ');
        header += '\n';
        std::string bytes = "\x93NUMPY";
        bytes += static_cast<char>(long_header ? 2 : 1);
        bytes += '\0';
        const auto length = static_cast<std::uint32_t>(header.size());
        bytes.append(reinterpret_cast<const char*>(&length), long_header ? 4 : 2);
        bytes += header;
        bytes.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
        members_.emplace_back(name, std::move(bytes));
    }

    /// Writes the archive: built in memory by libzip, then written to a temporary and renamed over path.
    void write(const std::filesystem::path& path, npz_compression compression = npz_compression::stored) const {
        const auto fail = [&](const std::string& cause) -> void { throw io_error(fmt::format("npz: {}: {}", path.string(), cause)); };
        zip_error_t error;
        zip_error_init(&error);
        std::unique_ptr<zip_source_t, detail::zip_source_freer> buffer(zip_source_buffer_create(nullptr, 0, 0, &error));
        if (!buffer) fail(fmt::format("cannot create an archive in memory (libzip: {})", zip_error_strerror(&error)));
        zip_source_keep(buffer.get());  // the archive's close must leave the bytes to us
        std::unique_ptr<zip_t, detail::zip_archive_closer> archive(zip_open_from_source(buffer.get(), ZIP_TRUNCATE, &error));
        if (!archive) {
            zip_source_free(buffer.get());  // undo the keep
            fail(fmt::format("cannot create an archive in memory (libzip: {})", zip_error_strerror(&error)));
        }
        zip_error_fini(&error);
        for (const auto& [name, bytes] : members_) {
            zip_source_t* member = zip_source_buffer(archive.get(), bytes.data(), bytes.size(), 0);
            const std::string member_name = name + ".npy";
            const zip_int64_t index = member ? zip_file_add(archive.get(), member_name.c_str(), member, ZIP_FL_ENC_UTF_8) : -1;
            if (index < 0) {
                if (member) zip_source_free(member);
                fail(fmt::format("cannot add member '{}' (libzip: {})", member_name, zip_strerror(archive.get())));
            }
            if (zip_set_file_compression(archive.get(), static_cast<zip_uint64_t>(index),
                                         compression == npz_compression::deflated ? ZIP_CM_DEFLATE : ZIP_CM_STORE, 0) != 0)
                fail(fmt::format("cannot set the compression of '{}' (libzip: {})", member_name, zip_strerror(archive.get())));
        }
        if (zip_close(archive.get()) != 0) fail(fmt::format("cannot assemble the archive (libzip: {})", zip_strerror(archive.get())));
        archive.release();  // zip_close freed it

        zip_source_t* src = buffer.get();
        if (zip_source_open(src) != 0) fail(fmt::format("cannot read the assembled archive (libzip: {})", zip_error_strerror(zip_source_error(src))));
        write_file_atomically(path, [&](atomic_file& out) {
            std::vector<char> chunk(std::size_t{1} << 20);
            for (;;) {
                const zip_int64_t n = zip_source_read(src, chunk.data(), chunk.size());
                if (n < 0) fail(fmt::format("cannot read the assembled archive (libzip: {})", zip_error_strerror(zip_source_error(src))));
                if (n == 0) break;
                out.write(chunk.data(), static_cast<std::size_t>(n));
            }
        });
        zip_source_close(src);
    }

private:
    std::vector<std::pair<std::string, std::string>> members_;  // name, .npy bytes
};

/// How save_samples_npz turns an image value v in [−1, 1] into a byte.
enum class sample_quantization {
    /// floor(clamp((v + 1)·127.5, 0, 255) + ½), round half up: 0.0 → 128. vediff's metrics rule
    /// (metrics/eight_bit_images.hpp, quantize_to_8bit) and DiT's / LightningDiT's sample_ddp.py
    /// (clamp(127.5·v + 128, 0, 255).to(uint8)).
    round_half_up,
    /// ADM's scripts/image_sample.py: ((v + 1)·127.5).clamp(0, 255).to(uint8), which truncates:
    /// 0.0 → 127, and only v = 1 reaches 255.
    adm_truncate
};

/// The byte of an image value in [−1, 1] (clamped outside); NaN is the caller's to refuse.
/// Rounding goes through the metrics' own quantize_to_8bit (of the value as a float), so a
/// written batch holds exactly the bytes vediff's metrics score.
inline std::uint8_t sample_byte(double v, sample_quantization q) {
    if (q == sample_quantization::round_half_up) return metrics::quantize_to_8bit(static_cast<float>(v));
    return static_cast<std::uint8_t>(std::clamp((v + 1.0) * 127.5, 0.0, 255.0));
}

namespace detail {
template <class T, device D>
void save_samples_npz(const std::filesystem::path& path, const tensor_view<T, D>& images, const std::vector<std::int64_t>* labels,
                      sample_quantization quantization) {
    static_assert(std::is_floating_point_v<T>, "save_samples_npz: images are float or double");
    if (images.rank() != 4 || (images.dim(1) != 1 && images.dim(1) != 3))
        throw shape_error(fmt::format("save_samples_npz: images must be (N, C, H, W) with C = 1 or 3, got shape {}", images.shape()));
    const std::int64_t n = images.dim(0), c = images.dim(1), h = images.dim(2), w = images.dim(3);
    if (labels && labels->size() != static_cast<std::size_t>(n))
        throw shape_error(fmt::format("save_samples_npz: {} labels for {} images", labels->size(), n));
    const auto host = images.to_vector();
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(n * h * w * 3));
    for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t k = 0; k < 3; ++k) {
            const std::int64_t channel = c == 1 ? 0 : k;
            for (std::int64_t y = 0; y < h; ++y)
                for (std::int64_t x = 0; x < w; ++x) {
                    const double v = host[static_cast<std::size_t>(((i * c + channel) * h + y) * w + x)];
                    if (!std::isfinite(v))
                        throw numeric_error(fmt::format("save_samples_npz: {}: image {} has the value {} at channel {}, pixel ({}, {})",
                                                        path.string(), i, v, channel, y, x));
                    bytes[static_cast<std::size_t>(((i * h + y) * w + x) * 3 + k)] = sample_byte(v, quantization);
                }
        }
    npz_writer writer;
    writer.add("arr_0", tensor_shape{n, h, w, 3}, std::span<const std::uint8_t>(bytes));
    if (labels) writer.add("arr_1", tensor_shape{n}, std::span<const std::int64_t>(*labels));
    writer.write(path, npz_compression::stored);
}
} // namespace detail

/// Writes images (N, C, H, W) with values in [−1, 1] as ADM's sample batches are written
/// (np.savez, uncompressed): `arr_0` uint8 (N, H, W, 3), one channel replicated to three, three
/// kept; bytes by vediff's metrics rule unless ADM's truncation is asked for. A NaN or infinite value is a numeric_error naming the image, channel and pixel.
template <class T, device D>
void save_samples_npz(const std::filesystem::path& path, const tensor_view<T, D>& images,
                      sample_quantization quantization = sample_quantization::round_half_up) {
    detail::save_samples_npz(path, images, nullptr, quantization);
}

/// The same with the class labels (N) as `arr_1` int64, as ADM's class-conditional sampling adds them.
template <class T, device D, class Label>
void save_samples_npz(const std::filesystem::path& path, const tensor_view<T, D>& images, const tensor_view<Label, D>& labels,
                      sample_quantization quantization = sample_quantization::round_half_up) {
    static_assert(std::is_integral_v<Label>, "save_samples_npz: labels are integers");
    if (labels.rank() != 1) throw shape_error(fmt::format("save_samples_npz: labels must be (N), got shape {}", labels.shape()));
    const auto l = labels.to_vector();
    const std::vector<std::int64_t> wide(l.begin(), l.end());
    detail::save_samples_npz(path, images, &wide, quantization);
}

/// The images of an ADM-style batch: `arr_0` uint8 (N, H, W, 3), as the evaluator reads it.
inline tensor<std::uint8_t> load_image_batch_npz(const std::filesystem::path& path, const std::string& name = "arr_0") {
    const npz_file file(path);
    const auto h = file.header(name);
    if (h.dtype != npy_dtype::uint8 || h.shape.rank() != 4 || h.shape[3] != 3)
        file.fail_member(name, fmt::format("an image batch is |u1 (N, H, W, 3), got {} {}", npy_descr(h.dtype), h.shape));
    return file.get<std::uint8_t>(name);
}

} // namespace vediff::io
