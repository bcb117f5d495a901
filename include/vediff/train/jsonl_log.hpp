#pragma once
// The JSON-lines training logs of the examples: one object per logged step, with a "step" key.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "vediff/io/atomic_file.hpp"

namespace vediff::train {

/// Keeps the log lines of steps up to `step`: a run resumed from the checkpoint of that step
/// rewrites what came after it.
inline void truncate_log(const std::filesystem::path& log_path, std::int64_t step) {
    if (!std::filesystem::exists(log_path)) return;
    std::ifstream in(log_path);
    std::string kept, line;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        if (nlohmann::json::parse(line).value("step", std::int64_t{0}) <= step) kept += line + "\n";
    }
    in.close();
    io::write_file_atomically(log_path, [&](io::atomic_file& f) { f.write(kept); });
}

} // namespace vediff::train
