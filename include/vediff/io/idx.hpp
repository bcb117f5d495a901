#pragma once
// Reader for IDX files, the format of MNIST and Fashion-MNIST (LeCun et al.): a 4-byte magic
// 0x00 0x00 <dtype code> <rank>, then rank big-endian uint32 extents, then the row-major data.
// Labels are 0x00000801 (uint8, rank 1), images 0x00000803 (uint8, rank 3). Files are read through
// zlib, which decompresses `.gz` and passes plain files through unchanged. Every problem is an
// io_error naming the file and the cause; nothing is allocated beyond what the file really holds.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <zlib.h>

#include "vediff/core/error.hpp"

namespace vediff::io {

/// The dtype code of unsigned bytes, the only one the (Fashion-)MNIST files use.
inline constexpr std::uint8_t idx_unsigned_byte = 0x08;

struct idx_array {
    std::vector<std::int64_t> dims;  // extents, outermost first
    std::vector<std::uint8_t> data;  // row-major, product(dims) bytes

    std::int64_t numel() const {
        std::int64_t n = 1;
        for (auto d : dims) n *= d;
        return n;
    }
};

namespace detail {

inline const char* idx_dtype_name(std::uint8_t code) {
    switch (code) {
        case 0x08: return "unsigned byte";
        case 0x09: return "signed byte";
        case 0x0B: return "int16";
        case 0x0C: return "int32";
        case 0x0D: return "float32";
        case 0x0E: return "float64";
        default: return "not an IDX dtype";
    }
}

/// A gzFile that throws io_error (naming the file) on a corrupt stream.
class gz_input {
public:
    explicit gz_input(const std::filesystem::path& path) : path_(path.string()) {
        std::error_code ec;
        if (!std::filesystem::exists(path, ec)) fail("cannot open: no such file");
        if (std::filesystem::is_directory(path, ec)) fail("cannot open: it is a directory");
        file_ = gzopen(path_.c_str(), "rb");
        if (!file_) fail("cannot open (gzopen failed)");
        gzbuffer(file_, 1 << 17);
    }
    gz_input(const gz_input&) = delete;
    gz_input& operator=(const gz_input&) = delete;
    ~gz_input() {
        if (file_) gzclose(file_);
    }

    /// Reads up to n bytes; fewer only at the end of the data.
    std::size_t read(void* dst, std::size_t n) {
        std::size_t got = 0;
        while (got < n) {
            const unsigned want = static_cast<unsigned>(std::min<std::size_t>(n - got, 1u << 30));
            const int r = gzread(file_, static_cast<char*>(dst) + got, want);
            if (r < 0) fail_stream();
            if (r == 0) break;
            got += static_cast<std::size_t>(r);
        }
        // zlib reports an early end of a compressed stream as Z_BUF_ERROR rather than a -1 read.
        if (got < n) check_stream();
        return got;
    }

    bool compressed() { return gzdirect(file_) == 0; }

    [[noreturn]] void fail(const std::string& cause) const { throw io_error(fmt::format("read_idx: {}: {}", path_, cause)); }

private:
    void check_stream() {
        int code = Z_OK;
        const std::string msg = zlib_message(code);
        if (code == Z_BUF_ERROR) fail(fmt::format("truncated gzip stream ({})", msg));
        if (code != Z_OK && code != Z_STREAM_END) fail_stream();
    }
    [[noreturn]] void fail_stream() {
        int code = Z_OK;
        const std::string msg = zlib_message(code);
        if (code == Z_ERRNO) fail(fmt::format("read error: {}", std::strerror(errno)));
        fail(fmt::format("corrupt gzip stream ({})", msg));
    }
    /// gzerror's text without the "<path>: " it starts with (our messages name the file already).
    std::string zlib_message(int& code) {
        const char* raw = gzerror(file_, &code);
        std::string msg = raw ? raw : "unknown zlib error";
        if (msg.starts_with(path_ + ": ")) msg.erase(0, path_.size() + 2);
        return msg;
    }

    std::string path_;
    gzFile file_ = nullptr;
};

inline std::uint32_t big_endian_u32(const unsigned char* b) {
    return (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) | (std::uint32_t{b[2]} << 8) | std::uint32_t{b[3]};
}

} // namespace detail

/// Reads an IDX file of unsigned bytes, gzip-compressed or plain. expected_rank > 0 demands that
/// rank (magic 0x0000080<rank>); 0 accepts ranks 1 to 4.
inline idx_array read_idx(const std::filesystem::path& path, int expected_rank = 0) {
    detail::gz_input in(path);
    const std::string kind = in.compressed() ? "gzip-compressed IDX" : "IDX";

    unsigned char magic[4];
    const std::size_t got_magic = in.read(magic, 4);
    if (got_magic < 4) in.fail(fmt::format("truncated: the {} header needs 4 magic bytes, the file holds {}", kind, got_magic));
    const std::uint32_t magic_word = detail::big_endian_u32(magic);
    if (magic[0] != 0 || magic[1] != 0)
        in.fail(fmt::format("bad magic 0x{:08x}: an IDX file starts with two zero bytes", magic_word));
    if (magic[2] != idx_unsigned_byte)
        in.fail(fmt::format("wrong dtype code 0x{:02x} ({}) in magic 0x{:08x}: only 0x08 (unsigned byte) is supported",
                            magic[2], detail::idx_dtype_name(magic[2]), magic_word));
    const int rank = magic[3];
    if (expected_rank > 0 && rank != expected_rank)
        in.fail(fmt::format("bad magic 0x{:08x}: expected 0x{:08x} (rank {})", magic_word, 0x800u + unsigned(expected_rank),
                            expected_rank));
    if (rank < 1 || rank > 4) in.fail(fmt::format("dims inconsistent: rank {} in magic 0x{:08x} (1 to 4 supported)", rank, magic_word));

    std::vector<unsigned char> header(static_cast<std::size_t>(4 * rank));
    const std::size_t got_header = in.read(header.data(), header.size());
    if (got_header < header.size())
        in.fail(fmt::format("truncated: the header promises {} extents ({} bytes), the file holds {} bytes after the magic",
                            rank, header.size(), got_header));
    idx_array out;
    std::int64_t expected = 1;
    for (int a = 0; a < rank; ++a) {
        const std::int64_t d = detail::big_endian_u32(&header[static_cast<std::size_t>(4 * a)]);
        out.dims.push_back(d);
        // 2^40 bytes is far beyond any IDX file; a larger product means a damaged header.
        if (d > 0 && expected > (std::int64_t{1} << 40) / d)
            in.fail(fmt::format("dims inconsistent: extents {} describe more than 2^40 bytes", fmt::join(out.dims, " x ")));
        expected *= d;
    }

    // Grow the buffer as the data arrives, so that a damaged header cannot make us allocate
    // terabytes before the truncation is noticed.
    std::size_t have = 0;
    const std::size_t want = static_cast<std::size_t>(expected);
    while (have < want) {
        const std::size_t chunk = std::min<std::size_t>(want - have, std::max<std::size_t>(have, std::size_t{1} << 20));
        out.data.resize(have + chunk);
        const std::size_t got = in.read(out.data.data() + have, chunk);
        have += got;
        if (got < chunk) break;
    }
    if (have < want)
        in.fail(fmt::format("truncated: the header promises {} data bytes (extents {}), the file holds {}", want,
                            fmt::join(out.dims, " x "), have));
    unsigned char extra;
    if (in.read(&extra, 1) != 0)
        in.fail(fmt::format("dims inconsistent: the file holds more than the {} data bytes its extents {} promise", want,
                            fmt::join(out.dims, " x ")));
    return out;
}

/// An IDX file of images: magic 0x00000803, extents (N, rows, cols).
inline idx_array read_idx_images(const std::filesystem::path& path) { return read_idx(path, 3); }

/// An IDX file of labels: magic 0x00000801, extent (N).
inline idx_array read_idx_labels(const std::filesystem::path& path) { return read_idx(path, 1); }

} // namespace vediff::io
