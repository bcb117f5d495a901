#pragma once
// The command-line shell every job shares: the `vediff` subcommands (train-tokenizer, sample, ...)
// parse their flags with cxxopts, print `--help` with every default, reject unknown flags and stray
// arguments, and turn any error into "<program>: <message>" on stderr with exit code 1. A job = an
// options struct, `add_options` / `read_options`, and a run function that returns its metrics as
// JSON; this header only wires them to argv.
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>

#include <cxxopts.hpp>
#include <fmt/format.h>

#include "vediff/core/error.hpp"

namespace vediff::jobs {

/// Parses argv into `options` (with an added -h/--help) and calls body(parsed). Returns the exit code.
template <class Body>
int run_command(cxxopts::Options& options, int argc, char** argv, Body&& body) {
    const std::string program = options.program();
    try {
        options.add_options()("h,help", "print this help");
        const auto parsed = options.parse(argc, argv);
        if (parsed.count("help")) {
            std::puts(options.help().c_str());
            return 0;
        }
        if (!parsed.unmatched().empty())
            throw std::invalid_argument(fmt::format("unexpected argument '{}' (flags start with --; see --help)", parsed.unmatched().front()));
        return body(parsed);
    } catch (const cxxopts::exceptions::exception& e) {
        fmt::print(stderr, "{}: {} (see --help)\n", program, e.what());
        return 1;
    } catch (const std::exception& e) {
        fmt::print(stderr, "{}: {}\n", program, e.what());
        return 1;
    }
}

/// The value of a required string flag; names the flag when it is missing.
inline std::string required_flag(const cxxopts::ParseResult& parsed, const std::string& name) {
    if (!parsed.count(name)) throw std::invalid_argument(fmt::format("--{} is required (see --help)", name));
    return parsed[name].as<std::string>();
}

/// `path` must exist; the error names the flag, the path and what would make it.
inline void require_path(const std::filesystem::path& path, const std::string& flag, const std::string& hint) {
    if (!std::filesystem::exists(path)) throw io_error(fmt::format("--{} {}: no such file or directory ({})", flag, path.string(), hint));
}

} // namespace vediff::jobs
