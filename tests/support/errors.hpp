#pragma once
// Helpers for tests of error paths and files: the message an exception carries, and a scratch
// directory removed at the end of the test.
#include <filesystem>
#include <string>

#include <unistd.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/core/error.hpp"

namespace vediff::testing {

/// The what() of the E that f() throws, or a marker when it throws none.
template <class E, class F>
std::string error_message(F&& f) {
    try {
        f();
    } catch (const E& e) {
        return e.what();
    }
    return "<no error>";
}
template <class F>
std::string shape_error_message(F&& f) {
    return error_message<shape_error>(f);
}
template <class F>
std::string io_error_message(F&& f) {
    return error_message<io_error>(f);
}

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

/// A fresh directory under the system temp dir, removed with its contents on destruction.
struct temp_dir {
    std::filesystem::path path;
    explicit temp_dir(const std::string& tag)
        : path(std::filesystem::temp_directory_path() / ("vediff_" + tag + "_" + std::to_string(::getpid()))) {
        std::filesystem::remove_all(path);
        std::filesystem::create_directories(path);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    std::filesystem::path operator/(const std::string& name) const { return path / name; }
};

} // namespace vediff::testing
