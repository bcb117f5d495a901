#pragma once
// The command-line shell every job shares: the `vediff` subcommands (train-tokenizer, sample, ...)
// parse their flags with cxxopts, print `--help` with every default, reject unknown flags and stray
// arguments, check every given flag's value (jobs/flag_checks.hpp) before the job starts, and turn
// any error into "<program>: <message>" on stderr: exit code 2 for an error of the command line
// (a bad flag value, a missing input, an unwritable output), 1 for a failure of the job. A job = an
// options struct, `add_options` / `read_options`, and a run function that returns its metrics as
// JSON; this header only wires them to argv.
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <string_view>

#include <cxxopts.hpp>
#include <fmt/format.h>

#include "vediff/core/error.hpp"
#include "vediff/jobs/flag_checks.hpp"

namespace vediff::jobs {

/// Parses argv into `options` (with an added -h/--help), checks the given flags (flag_kinds(), the
/// command's `overrides` first) and calls body(parsed). Returns the exit code.
template <class Body>
int run_command(cxxopts::Options& options, int argc, char** argv, Body&& body,
                const std::map<std::string, flag_kind, std::less<>>& overrides = {}) {
    const std::string program = options.program();
    try {
        options.add_options()("h,help", "print this help");
        bool help = false;
        for (int i = 1; i < argc; ++i) help = help || std::string_view(argv[i]) == "--help" || std::string_view(argv[i]) == "-h";
        if (!help) check_flags(argc, argv, overrides);
        const auto parsed = options.parse(argc, argv);
        if (parsed.count("help")) {
            std::puts(options.help().c_str());
            return 0;
        }
        if (!parsed.unmatched().empty())
            throw usage_error(fmt::format("unexpected argument '{}' (flags start with --; see --help)", parsed.unmatched().front()));
        return body(parsed);
    } catch (const cxxopts::exceptions::exception& e) {
        fmt::print(stderr, "{}: {} (see --help)\n", program, e.what());
        return 2;
    } catch (const usage_error& e) {
        fmt::print(stderr, "{}: {}\n", program, e.what());
        return 2;
    } catch (const std::exception& e) {
        fmt::print(stderr, "{}: {}\n", program, e.what());
        return 1;
    }
}

/// The value of a required string flag; names the flag when it is missing.
inline std::string required_flag(const cxxopts::ParseResult& parsed, const std::string& name) {
    if (!parsed.count(name)) throw usage_error(fmt::format("--{} is required (see --help)", name));
    return parsed[name].as<std::string>();
}

/// `path` must exist; the error names the flag, the path and what would make it.
inline void require_path(const std::filesystem::path& path, const std::string& flag, const std::string& hint) {
    if (!std::filesystem::exists(path)) throw io_error(fmt::format("--{} {}: no such file or directory ({})", flag, path.string(), hint));
}

} // namespace vediff::jobs
