#pragma once
// Atomic file replacement: the bytes go to `<path>.tmp.<pid>` in the same directory, are flushed
// to disk (fsync), and the temporary is renamed over the target. rename(2) within one file system
// is atomic, so a reader sees either the old file or the complete new one, and a crash or an
// exception while writing leaves the previous checkpoint untouched. A process killed while writing
// (kill -9, a crash) leaves its temporary behind; the next write of the same target removes the
// temporaries of processes that no longer exist.
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

#include <csignal>
#include <system_error>

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include "vediff/core/error.hpp"

namespace vediff::io {

/// Removes the files `<target><marker><pid>` (and `<target><marker><pid>.tmp.<pid>`, the atomic
/// write of such a file) beside target whose process pid no longer runs: what a write killed
/// before its rename left. Files of live processes (another rank's write) stay.
inline void remove_stale_temporaries(const std::filesystem::path& target, std::string_view marker) {
    std::error_code ec;
    const auto dir = target.parent_path().empty() ? std::filesystem::path(".") : target.parent_path();
    const std::string prefix = target.filename().string() + std::string(marker);
    for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
        std::string pid_text = name.substr(prefix.size());
        if (const auto tmp = pid_text.find(".tmp."); tmp != std::string::npos) {
            const std::string inner = pid_text.substr(tmp + 5);
            if (inner.empty() || inner.find_first_not_of("0123456789") != std::string::npos) continue;
            pid_text.resize(tmp);
        }
        if (pid_text.empty() || pid_text.find_first_not_of("0123456789") != std::string::npos || pid_text.size() > 9) continue;
        const auto pid = static_cast<::pid_t>(std::stol(pid_text));
        if (pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH && it->is_regular_file(ec)) std::filesystem::remove(it->path(), ec);
    }
}

class atomic_file {
public:
    explicit atomic_file(std::filesystem::path target)
        : target_(std::move(target)), temp_(target_.string() + ".tmp." + std::to_string(::getpid())) {
        remove_stale_temporaries(target_, ".tmp.");
        fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd_ < 0) fail("cannot create the temporary file " + temp_.string());
    }
    atomic_file(const atomic_file&) = delete;
    atomic_file& operator=(const atomic_file&) = delete;

    /// Without commit() (an exception on the way), the temporary is removed and the target stays.
    ~atomic_file() {
        if (fd_ >= 0) ::close(fd_);
        if (!committed_) ::unlink(temp_.c_str());
    }

    void write(const void* data, std::size_t bytes) {
        const char* p = static_cast<const char*>(data);
        while (bytes > 0) {
            const ::ssize_t n = ::write(fd_, p, bytes);
            if (n < 0) {
                if (errno == EINTR) continue;
                fail("write failed");
            }
            p += n;
            bytes -= static_cast<std::size_t>(n);
        }
    }
    void write(std::string_view s) { write(s.data(), s.size()); }

    /// Overwrites bytes already written at `offset` (e.g. a header whose checksums are known only
    /// once the data after it is written); the file position stays where it was.
    void write_at(std::size_t offset, const void* data, std::size_t bytes) {
        const char* p = static_cast<const char*>(data);
        while (bytes > 0) {
            const ::ssize_t n = ::pwrite(fd_, p, bytes, static_cast<::off_t>(offset));
            if (n < 0) {
                if (errno == EINTR) continue;
                fail("write failed");
            }
            p += n;
            offset += static_cast<std::size_t>(n);
            bytes -= static_cast<std::size_t>(n);
        }
    }

    /// Flushes the data to disk and renames the temporary over the target.
    void commit() {
        if (::fsync(fd_) != 0) fail("fsync failed");
        const int fd = std::exchange(fd_, -1);
        if (::close(fd) != 0) fail("close failed");
        if (::rename(temp_.c_str(), target_.c_str()) != 0) fail("cannot rename " + temp_.string() + " over it");
        committed_ = true;
        // Make the rename itself durable; a failure here no longer endangers any data.
        const auto dir = target_.parent_path().empty() ? std::filesystem::path(".") : target_.parent_path();
        const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            ::fsync(dfd);
            ::close(dfd);
        }
    }

    const std::filesystem::path& target() const { return target_; }
    const std::filesystem::path& temp_path() const { return temp_; }

private:
    [[noreturn]] void fail(const std::string& what) const {
        throw io_error(fmt::format("{}: {}: {}", target_.string(), what, std::strerror(errno)));
    }

    std::filesystem::path target_;
    std::filesystem::path temp_;
    int fd_ = -1;
    bool committed_ = false;
};

/// Calls fill(atomic_file&) to produce the contents of `path`, then commits; if fill throws,
/// the exception propagates and the file at `path` is unchanged.
template <class F>
void write_file_atomically(const std::filesystem::path& path, F&& fill) {
    atomic_file file(path);
    fill(file);
    file.commit();
}

} // namespace vediff::io
