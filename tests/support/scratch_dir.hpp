#pragma once
// A scratch directory for a test's files: made empty under the system's temp directory, removed
// when the test ends. The process id in its name keeps concurrent test processes (ctest -j runs
// the grouped executables side by side) out of each other's way.
#include <filesystem>
#include <string>
#include <system_error>

#include <unistd.h>

namespace vediff::testing {

struct scratch_dir {
    std::filesystem::path path;

    /// `name` says which test owns it: vediff_<name>_<pid> under the temp directory.
    explicit scratch_dir(const std::string& name)
        : path(std::filesystem::temp_directory_path() / ("vediff_" + name + "_" + std::to_string(::getpid()))) {
        std::filesystem::remove_all(path);
        std::filesystem::create_directories(path);
    }
    scratch_dir(const scratch_dir&) = delete;
    scratch_dir& operator=(const scratch_dir&) = delete;
    ~scratch_dir() {
        std::error_code ignored;  // a destructor must not throw; a leftover temp directory is harmless
        std::filesystem::remove_all(path, ignored);
    }
};

}  // namespace vediff::testing
