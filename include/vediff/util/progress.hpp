#pragma once
// A progress display for training loops: step/total, a bar, caller-provided key=value fields,
// throughput and ETA. On a terminal it redraws one line in place ('\r', at most every
// redraw_interval_s); elsewhere (CI logs, files) it prints a plain line every line_interval_s.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <unistd.h>

#include <fmt/format.h>

namespace vediff::util {

/// One "key=value" item of a progress line; numbers are formatted with 4 significant digits.
struct progress_field {
    std::string key;
    std::string value;

    progress_field(std::string_view k, double v) : key(k), value(fmt::format("{:.4g}", v)) {}
    template <std::integral I>
    progress_field(std::string_view k, I v) : key(k), value(fmt::format("{}", v)) {}
    progress_field(std::string_view k, std::string_view v) : key(k), value(v) {}
    progress_field(std::string_view k, const char* v) : key(k), value(v) {}
};

enum class progress_style {
    automatic,  // redraw on a terminal, lines otherwise
    redraw,
    lines,
    silent,  // prints nothing (the ranks other than 0 of a data-parallel run)
};

struct progress_options {
    std::string label;           // printed first, e.g. "tokenizer"
    double items_per_step = 1;   // e.g. the batch size, so that the rate reads in images/s
    std::string unit = "it";
    int bar_width = 24;
    double redraw_interval_s = 0.1;
    double line_interval_s = 10.0;
    std::int64_t start_step = 0;  // the step a resumed run starts from (the rate counts from here)
    progress_style style = progress_style::automatic;
};

class progress_bar {
    using clock = std::chrono::steady_clock;

public:
    explicit progress_bar(std::int64_t total, progress_options opt = {}, std::FILE* out = stdout)
        : total_(std::max<std::int64_t>(total, 0)), opt_(std::move(opt)), out_(out), start_(clock::now()) {
        redraw_ = opt_.style == progress_style::redraw ||
                  (opt_.style == progress_style::automatic && ::isatty(::fileno(out_)) != 0);
        last_step_ = opt_.start_step;
    }
    progress_bar(const progress_bar&) = delete;
    progress_bar& operator=(const progress_bar&) = delete;
    ~progress_bar() {
        if (!finished_ && drawn_) finish();
    }

    void update(std::int64_t step, std::initializer_list<progress_field> fields = {}) {
        update(step, std::span<const progress_field>(fields.begin(), fields.size()));
    }
    /// Reports that `step` steps are done; draws when the interval has passed (or at the end).
    void update(std::int64_t step, std::span<const progress_field> fields) {
        last_step_ = step;
        if (opt_.style == progress_style::silent) return;
        last_fields_.assign(fields.begin(), fields.end());
        const auto now = clock::now();
        const double since_draw = std::chrono::duration<double>(now - last_draw_).count();
        const double interval = redraw_ ? opt_.redraw_interval_s : opt_.line_interval_s;
        if (drawn_ && since_draw < interval && step < total_) return;
        draw(now);
    }

    /// Prints a message on a line of its own (e.g. an evaluation result) without breaking the bar.
    void note(std::string_view message) {
        if (opt_.style == progress_style::silent) return;
        if (redraw_ && drawn_) fmt::print(out_, "\r\x1b[K{}\n", message);
        else fmt::print(out_, "{}\n", message);
        if (redraw_ && drawn_) draw(clock::now());
        std::fflush(out_);
    }

    /// Draws the final state (with the last fields unless new ones are given) and ends the line.
    void finish(std::initializer_list<progress_field> fields = {}) {
        if (finished_) return;
        if (opt_.style == progress_style::silent) {
            finished_ = true;
            return;
        }
        if (fields.size()) last_fields_.assign(fields.begin(), fields.end());
        if (!drawn_ || drawn_step_ != last_step_ || fields.size()) draw(clock::now());
        if (redraw_) std::fputc('\n', out_);
        std::fflush(out_);
        finished_ = true;
    }

    /// The text of one line for `step` after `elapsed_s` seconds (no '\r' or newline).
    std::string format_line(std::int64_t step, std::span<const progress_field> fields, double elapsed_s) const {
        std::string s;
        if (!opt_.label.empty()) s += opt_.label + " ";
        const auto width = std::to_string(total_).size();
        s += fmt::format("{:>{}}/{}", step, width, total_);
        const double fraction = total_ > 0 ? std::clamp(double(step) / double(total_), 0.0, 1.0) : 1.0;
        if (redraw_) {
            const int filled = static_cast<int>(fraction * opt_.bar_width);
            s += fmt::format(" [{}{}]", std::string(static_cast<std::size_t>(filled), '#'),
                             std::string(static_cast<std::size_t>(opt_.bar_width - filled), '.'));
        }
        s += fmt::format(" {:3.0f}%", 100 * fraction);
        for (const auto& f : fields) s += fmt::format(" {}={}", f.key, f.value);
        const double steps = static_cast<double>(step - opt_.start_step);
        const double rate = elapsed_s > 0 && steps > 0 ? steps / elapsed_s : 0.0;
        const double items = rate * opt_.items_per_step;
        s += fmt::format(" | {} {}/s", items >= 100 ? fmt::format("{:.0f}", items) : fmt::format("{:.2f}", items), opt_.unit);
        s += " ETA " + (rate > 0 ? format_duration(double(std::max<std::int64_t>(total_ - step, 0)) / rate) : std::string("?"));
        s += " elapsed " + format_duration(elapsed_s);
        return s;
    }

    /// True when the bar redraws in place (a terminal), false for plain lines.
    bool redraws() const { return redraw_; }

    /// "m:ss", or "h:mm:ss" from an hour on.
    static std::string format_duration(double seconds) {
        const auto t = static_cast<std::int64_t>(std::llround(std::max(seconds, 0.0)));
        if (t >= 3600) return fmt::format("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60);
        return fmt::format("{}:{:02}", t / 60, t % 60);
    }

private:
    void draw(clock::time_point now) {
        const double elapsed = std::chrono::duration<double>(now - start_).count();
        const auto line = format_line(last_step_, last_fields_, elapsed);
        if (redraw_) fmt::print(out_, "\r{}\x1b[K", line);  // ESC[K clears what a longer line left
        else fmt::print(out_, "{}\n", line);
        std::fflush(out_);
        drawn_ = true;
        drawn_step_ = last_step_;
        last_draw_ = now;
    }

    std::int64_t total_;
    progress_options opt_;
    std::FILE* out_;
    clock::time_point start_;
    clock::time_point last_draw_{};
    bool redraw_ = false;
    bool drawn_ = false;
    bool finished_ = false;
    std::int64_t last_step_ = 0;
    std::int64_t drawn_step_ = -1;
    std::vector<progress_field> last_fields_;
};

} // namespace vediff::util
