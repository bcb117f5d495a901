#pragma once
// The command line's own errors, checked before a job reads or writes anything: each flag given on
// the command line is checked, as typed and before cxxopts converts it, against what its name
// means in every subcommand (a size is a
// positive integer, a weight a finite number ≥ 0, --data a directory that exists, --out a place
// that can be written), from the text the user typed. Defaults are valid by construction and not
// checked. A failure is a usage_error: one line naming the flag, the value and the rule, exit code
// 2 (jobs/command.hpp), nothing written.
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

#include <unistd.h>

#include <fmt/format.h>

namespace vediff::jobs {

/// An error of the command line itself (a flag's value, a missing input, an unwritable output):
/// the program exits with code 2, as usage errors do.
struct usage_error : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

enum class flag_kind {
    positive_integer,      // sizes, counts, steps
    non_negative_integer,  // counts where 0 means "none" or "all"
    positive_real,         // learning rates, tolerances, scales
    non_negative_real,     // loss weights, decay, budgets (0: off)
    finite_real,           // any finite number
    fraction,              // [0, 1): Adam's betas, label dropout
    unit_interval,         // [0, 1]: EMA decay
    existing_file,         // an input file
    existing_directory,    // an input directory (a run, a data set)
    output_file,           // a file to write: not a directory; its directory exists or can be made, and is writable
    output_path,           // a file or a directory to write
    lpips_weights,         // an existing file, or "random"
};

/// What each flag name means, in every subcommand that has it.
inline const std::map<std::string, flag_kind, std::less<>>& flag_kinds() {
    using k = flag_kind;
    static const std::map<std::string, flag_kind, std::less<>> kinds = {
        // sizes and counts
        {"batch", k::positive_integer}, {"steps", k::positive_integer}, {"epochs", k::positive_integer},
        {"ch", k::positive_integer}, {"num-res-blocks", k::positive_integer}, {"z-channels", k::positive_integer},
        {"norm-groups", k::positive_integer}, {"depth", k::positive_integer}, {"heads", k::positive_integer},
        {"hidden", k::positive_integer}, {"patch", k::positive_integer}, {"width", k::positive_integer},
        {"velocity-hidden", k::positive_integer}, {"disc-ndf", k::positive_integer}, {"lpips-width-divisor", k::positive_integer},
        {"image-size", k::positive_integer}, {"channels", k::positive_integer}, {"prefetch", k::positive_integer},
        {"log-every", k::positive_integer}, {"checkpoint-every", k::positive_integer}, {"sampler-steps", k::positive_integer},
        {"tokenizer-steps", k::positive_integer}, {"flow-steps", k::positive_integer}, {"k", k::positive_integer},
        {"probes", k::positive_integer}, {"per-class", k::positive_integer}, {"samples", k::positive_integer},
        {"workers", k::non_negative_integer}, {"warmup", k::non_negative_integer}, {"stop-after", k::non_negative_integer},
        {"disc-start", k::non_negative_integer}, {"max-images", k::non_negative_integer}, {"max-steps", k::non_negative_integer},
        {"fd-bootstrap", k::non_negative_integer}, {"eval-images", k::non_negative_integer},
        {"robustness-images", k::non_negative_integer}, {"sensitivity-images", k::non_negative_integer},
        {"seed", k::non_negative_integer},
        // numbers
        {"lr", k::positive_real}, {"muon-lr", k::positive_real}, {"delta", k::positive_real}, {"atol", k::positive_real},
        {"rtol", k::positive_real}, {"threshold", k::positive_real}, {"time-shift", k::positive_real},
        {"sigma-vae-scale", k::positive_real}, {"comm-timeout", k::positive_real},
        {"ve-weight", k::non_negative_real}, {"kl-weight", k::non_negative_real}, {"magnitude-weight", k::non_negative_real},
        {"perceptual-weight", k::non_negative_real}, {"disc-weight", k::non_negative_real}, {"disc-lr", k::non_negative_real},
        {"weight-decay", k::non_negative_real}, {"clip", k::non_negative_real}, {"time-budget", k::non_negative_real},
        {"cfg", k::non_negative_real}, {"tau", k::finite_real},
        {"beta1", k::fraction}, {"beta2", k::fraction}, {"class-dropout", k::fraction}, {"ema", k::unit_interval},
        // files and directories
        {"data", k::existing_directory}, {"image-folder", k::existing_directory}, {"tokenizer", k::existing_directory},
        {"dit", k::existing_directory}, {"latents", k::existing_file}, {"classifier", k::existing_file},
        {"init-from", k::existing_file}, {"inception-weights", k::existing_file}, {"lpips", k::lpips_weights},
        {"out", k::output_path},
    };
    return kinds;
}

namespace detail {

inline std::optional<long double> parse_number(std::string_view text) {
    if (text.empty()) return std::nullopt;
    const std::string s(text);
    char* end = nullptr;
    errno = 0;
    const long double v = std::strtold(s.c_str(), &end);
    if (end != s.c_str() + s.size() || errno == ERANGE) return std::nullopt;
    return v;
}

inline bool is_integer_text(std::string_view text) {
    if (!text.empty() && (text.front() == '-' || text.front() == '+')) text.remove_prefix(1);
    if (text.empty()) return false;
    for (const char c : text)
        if (c < '0' || c > '9') return false;
    return true;
}

/// The nearest existing ancestor of a path (the path itself when it exists).
inline std::filesystem::path existing_ancestor(std::filesystem::path p) {
    std::error_code ec;
    if (p.is_relative()) p = std::filesystem::current_path(ec) / p;
    while (!p.empty() && !std::filesystem::exists(p, ec)) {
        if (p == p.parent_path()) break;
        p = p.parent_path();
    }
    return p;
}

} // namespace detail

/// Checks one flag's text against its kind; throws usage_error naming the flag and the value.
inline void check_flag(std::string_view flag, std::string_view value, flag_kind kind) {
    namespace fs = std::filesystem;
    const auto fail = [&](std::string_view rule) { throw usage_error(fmt::format("--{} {}: {}", flag, value, rule)); };
    using k = flag_kind;
    switch (kind) {
    case k::positive_integer:
    case k::non_negative_integer: {
        if (!detail::is_integer_text(value)) fail("not an integer");
        const auto v = detail::parse_number(value);
        if (!v) fail("not an integer in range");
        if (kind == k::positive_integer && *v < 1) fail("must be a positive integer");
        if (kind == k::non_negative_integer && *v < 0) fail("must be an integer ≥ 0");
        return;
    }
    case k::positive_real:
    case k::non_negative_real:
    case k::finite_real:
    case k::fraction:
    case k::unit_interval: {
        const auto v = detail::parse_number(value);
        if (!v) fail("not a number");
        if (!std::isfinite(*v)) fail("must be a finite number");
        if (kind == k::positive_real && !(*v > 0)) fail("must be > 0");
        if (kind == k::non_negative_real && *v < 0) fail("must be ≥ 0");
        if (kind == k::fraction && !(*v >= 0 && *v < 1)) fail("must be in [0, 1)");
        if (kind == k::unit_interval && !(*v >= 0 && *v <= 1)) fail("must be in [0, 1]");
        return;
    }
    case k::lpips_weights:
        if (value == "random") return;
        [[fallthrough]];
    case k::existing_file: {
        std::error_code ec;
        const fs::path p(value);
        if (value.empty()) fail("an empty path");
        if (!fs::exists(p, ec)) fail("no such file");
        if (fs::is_directory(p, ec)) fail("a directory, where a file is expected");
        if (::access(p.c_str(), R_OK) != 0) fail("not readable");
        return;
    }
    case k::existing_directory: {
        std::error_code ec;
        const fs::path p(value);
        if (value.empty()) fail("an empty path");
        if (!fs::exists(p, ec)) fail("no such directory");
        if (!fs::is_directory(p, ec)) fail("a file, where a directory is expected");
        return;
    }
    case k::output_file:
    case k::output_path: {
        std::error_code ec;
        const fs::path p(value);
        if (value.empty()) fail("an empty path");
        if (kind == k::output_file && fs::is_directory(p, ec)) fail("a directory, where a file is to be written");
        const fs::path base = detail::existing_ancestor(p);
        if (base != fs::absolute(p, ec) && !fs::is_directory(base, ec))
            fail(fmt::format("cannot be made: {} is a file, not a directory", base.string()));
        if (::access(base.c_str(), W_OK) != 0) fail(fmt::format("cannot be written: {} is not writable", base.string()));
        return;
    }
    }
}

/// Checks every flag given in argv ("--name value" or "--name=value") whose name has a kind
/// (the command's `overrides` first, then flag_kinds()), from the text as typed: before any
/// parsing, so that "--batch abc" is named as such. Every flag with a kind takes a value.
inline void check_flags(int argc, char** argv, const std::map<std::string, flag_kind, std::less<>>& overrides = {}) {
    for (int i = 1; i < argc; ++i) {
        const std::string_view token = argv[i];
        if (token.size() < 3 || token.substr(0, 2) != "--") continue;
        std::string_view name = token.substr(2), value;
        bool has_value = false;
        if (const auto eq = name.find('='); eq != std::string_view::npos) {
            value = name.substr(eq + 1);
            name = name.substr(0, eq);
            has_value = true;
        }
        const auto own = overrides.find(name);
        const auto general = flag_kinds().find(name);
        if (own == overrides.end() && general == flag_kinds().end()) continue;
        if (!has_value) {
            if (i + 1 >= argc) throw usage_error(fmt::format("--{}: a value is expected after it", name));
            value = argv[++i];
        }
        check_flag(name, value, own != overrides.end() ? own->second : general->second);
    }
}

} // namespace vediff::jobs
