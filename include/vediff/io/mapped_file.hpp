#pragma once
// A whole file mapped into memory, read-only for the file: pages are read from the page cache
// when first touched, and processes that map the same file share them. That is how a data set
// larger than memory (an ImageNet latent cache, 42 GB) is read by every rank of a node without a
// copy each. The mapping is private and writable: writing to it changes only this process's copy
// of the touched page (copy-on-write), never the file.
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include "vediff/core/error.hpp"

namespace vediff::io {

class mapped_file {
public:
    /// Maps `path`; io_error names the file and the cause (missing, a directory, empty, mmap failed).
    explicit mapped_file(const std::filesystem::path& path) {
        const auto fail = [&](const std::string& cause) { throw io_error(fmt::format("{}: {}", path.string(), cause)); };
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) fail(fmt::format("cannot open: {}", std::strerror(errno)));
        struct stat st {};
        if (::fstat(fd, &st) != 0) {
            const int e = errno;
            ::close(fd);
            fail(fmt::format("cannot stat: {}", std::strerror(e)));
        }
        if (!S_ISREG(st.st_mode)) {
            ::close(fd);
            fail("not a regular file");
        }
        size_ = static_cast<std::size_t>(st.st_size);
        if (size_ > 0) {
            void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
            const int e = errno;
            ::close(fd);
            if (p == MAP_FAILED) fail(fmt::format("cannot map {} bytes: {}", size_, std::strerror(e)));
            data_ = static_cast<char*>(p);
        } else {
            ::close(fd);
        }
    }
    mapped_file(const mapped_file&) = delete;
    mapped_file& operator=(const mapped_file&) = delete;
    ~mapped_file() {
        if (data_) ::munmap(data_, size_);
    }

    char* data() const { return data_; }
    std::size_t size() const { return size_; }

private:
    char* data_ = nullptr;
    std::size_t size_ = 0;
};

} // namespace vediff::io
