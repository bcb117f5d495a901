#pragma once
// What every libFuzzer harness of tests/fuzz shares: the input written to a file of this process
// (the readers take paths, as vediff's users give them), and the rule for outcomes. A named
// vediff error (io_error, shape_error, std::invalid_argument, ...) is the expected answer to a
// bad file; a crash, a sanitizer report, a hang or an allocation beyond libFuzzer's
// -malloc_limit_mb is a finding. std::bad_alloc and std::length_error would mean that a size
// read from the file reached an allocation unchecked, so they abort (a finding) instead of being
// taken as an error message.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <new>
#include <stdexcept>
#include <string>

#include <unistd.h>

namespace vediff::fuzz {

/// A file under /dev/shm (or the temp directory) holding the input; one per process and suffix.
inline std::filesystem::path input_file(const std::uint8_t* data, std::size_t size, const char* suffix) {
    static const std::filesystem::path dir = std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
    const auto path = dir / ("vediff_fuzz_" + std::to_string(::getpid()) + suffix);
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) std::abort();
    if (size && std::fwrite(data, 1, size, f) != size) std::abort();
    std::fclose(f);
    return path;
}

/// Runs f; vediff's named errors are expected answers, anything else escapes (a finding).
template <class F>
void expect_named_errors(F&& f) {
    try {
        f();
    } catch (const std::bad_alloc&) {
        std::fputs("finding: std::bad_alloc (a size from the input reached an allocation)\n", stderr);
        std::abort();
    } catch (const std::length_error& e) {
        std::fprintf(stderr, "finding: std::length_error %s\n", e.what());
        std::abort();
    } catch (const std::exception&) {
    }
}

} // namespace vediff::fuzz
