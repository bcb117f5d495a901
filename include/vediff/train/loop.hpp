#pragma once
// The training loop every trainer runs (tokenizer, DiT, classifier): when to stop, the progress
// bar, the JSON-lines log, periodic checkpoints and the summary of the run. The trainer gives
// one function for a step and one that saves a checkpoint; the loop decides the rest, the same
// way on every rank of a data-parallel run:
//   - the stop decision is rank 0's, handed to every rank each step (a time budget read on
//     each rank's own clock could otherwise end the ranks at different steps);
//   - rank 0 alone draws the progress bar, writes the log and saves checkpoints;
//   - the log's numbers are the step's global values (the trainer averages them over ranks).
// A run ends at `steps` or when the time budget is spent (both finish the run: the budget is
// part of the run's definition), or after `stop_after` steps of this invocation (not finished:
// continue with --resume).
//
// Testing hook: VEDIFF_FAULT="kill:RANK:STEP" makes rank RANK kill itself (SIGKILL) when it is
// about to run step STEP, and "hang:RANK:STEP" makes it stop (SIGSTOP), as a crashed or stuck
// process would; the fault-tolerance tests use it (tests/distributed).
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "vediff/train/jsonl_log.hpp"
#include "vediff/util/progress.hpp"

namespace vediff::train {

enum class stop_reason { steps, time_budget, stop_after };

inline std::string_view to_string(stop_reason r) {
    switch (r) {
    case stop_reason::steps: return "steps";
    case stop_reason::time_budget: return "time_budget";
    case stop_reason::stop_after: return "stop_after";
    }
    return "?";
}

struct loop_options {
    std::int64_t steps = 0;             // the run's length
    double time_budget_s = 0;           // > 0: the run ends once this much training time has passed
    std::int64_t stop_after = 0;        // > 0: this invocation stops after this many steps
    std::int64_t log_every = 25;        // a log line every so many steps, and at the last step
    std::int64_t checkpoint_every = 0;  // > 0: a checkpoint every so many steps (and always at the end)
    // Reports' values left on the device (step_report::read) are read every so many steps, and
    // always before a log line, a checkpoint and the end; 1 reads each step at once.
    std::int64_t read_every = 1;
    util::progress_options progress{};  // label, items per step, unit
};

/// What a step reports: its (global) loss (the bar shows its smoothed value), more fields for the
/// progress bar, the fields of its
/// log line (the loop adds "step"), and a message to print on a line of its own (e.g. an
/// evaluation's result).
struct step_report {
    double loss = 0;
    std::vector<util::progress_field> progress;
    nlohmann::json log = nlohmann::json::object();
    std::string note;
    // Where some of the above are still on the device (core/deferred.hpp): fills them in when the
    // loop reads them (loop_options::read_every), in step order, on every rank at the same steps
    // (it may average over the ranks), before the loop uses them. It may throw (a loss that is not
    // finite): nothing is saved after the step that failed.
    std::function<void(step_report&)> read;
};

struct loop_result {
    std::int64_t steps = 0;       // steps completed by the run
    std::int64_t first_step = 0;  // where this invocation started
    double seconds = 0;           // wall time of this invocation's steps
    double smoothed_loss = 0;     // exponential average (0.98) of the step losses
    stop_reason reason = stop_reason::steps;

    bool finished() const { return reason != stop_reason::stop_after; }
    std::int64_t steps_this_run() const { return steps - first_step; }
    nlohmann::json to_json() const {
        return {{"finished", finished()}, {"stopped_by", std::string(to_string(reason))}, {"steps", steps},
                {"steps_this_run", steps_this_run()}, {"train_seconds", seconds}, {"final_loss_smoothed", smoothed_loss}};
    }
};

namespace loop_detail {

/// The fault VEDIFF_FAULT asks of this rank at this step, if any ("kill" or "hang").
inline std::optional<std::string> injected_fault(int rank, std::int64_t step) {
    const char* spec = std::getenv("VEDIFF_FAULT");
    if (!spec || !*spec) return std::nullopt;
    const std::string s(spec);
    const auto a = s.find(':'), b = s.find(':', a == std::string::npos ? a : a + 1);
    if (a == std::string::npos || b == std::string::npos)
        throw std::invalid_argument(fmt::format("VEDIFF_FAULT '{}': expected kill:RANK:STEP or hang:RANK:STEP", s));
    const std::string kind = s.substr(0, a);
    if (kind != "kill" && kind != "hang")
        throw std::invalid_argument(fmt::format("VEDIFF_FAULT '{}': the fault is '{}', not kill or hang", s, kind));
    if (std::stoi(s.substr(a + 1, b - a - 1)) != rank || std::stoll(s.substr(b + 1)) != step) return std::nullopt;
    return kind;
}

inline void apply_fault(int rank, std::int64_t step) {
    const auto fault = injected_fault(rank, step);
    if (!fault) return;
    std::fprintf(stderr, "VEDIFF_FAULT: rank %d %s at step %lld\n", rank, fault->c_str(), static_cast<long long>(step));
    std::fflush(stderr);
    std::raise(*fault == "kill" ? SIGKILL : SIGSTOP);
}

} // namespace loop_detail

/// Runs steps from `step` (the run's completed steps, advanced in place) until the run or this
/// invocation ends. do_step(step) trains one step and returns its report; save() writes a
/// checkpoint of `step` completed steps (called on rank 0 only, at every checkpoint_every steps
/// and at the end). The log at log_path continues a resumed run (lines past `step` dropped) or
/// starts anew; an empty log_path writes no log.
///
/// prepare_save() runs on every rank right before each save (a collective the checkpoint needs,
/// e.g. gathering a sharded optimizer's state: distributed/zero.hpp).
template <class Comm, class Step, class Save, class PrepareSave>
loop_result run_training_loop(std::int64_t& step, const loop_options& opt, Comm& comm, const std::filesystem::path& log_path,
                              bool resume, Step&& do_step, Save&& save, PrepareSave&& prepare_save) {
    const bool root = comm.rank() == 0;
    std::ofstream log;
    if (root && !log_path.empty()) {
        if (resume) truncate_log(log_path, step);
        else std::filesystem::remove(log_path);
        log.open(log_path, std::ios::app);
        if (!log) throw io_error(fmt::format("training log {}: cannot open for writing", log_path.string()));
    }
    auto bar_options = opt.progress;
    bar_options.start_step = step;
    if (!root) bar_options.style = util::progress_style::silent;
    util::progress_bar bar(opt.steps, bar_options);

    loop_result result;
    result.first_step = step;
    // The reports of the steps up to `step` not read yet (their first step is step − size()): read
    // in order, then shown, logged and folded into the smoothed loss as each step's own.
    std::vector<step_report> unread;
    const auto read_reports = [&] {
        std::int64_t s = step - static_cast<std::int64_t>(unread.size());
        for (auto& report : unread) {
            if (report.read) report.read(report);
            result.smoothed_loss = s == result.first_step ? report.loss : 0.98 * result.smoothed_loss + 0.02 * report.loss;
            ++s;
            if (!root) continue;
            std::vector<util::progress_field> fields{{"loss", result.smoothed_loss}};
            fields.insert(fields.end(), report.progress.begin(), report.progress.end());
            bar.update(s, fields);
            if (!report.note.empty()) bar.note(report.note);
            if (log.is_open() && (s % std::max<std::int64_t>(opt.log_every, 1) == 0 || s == opt.steps)) {
                nlohmann::json line = {{"step", s}};
                line.update(report.log);
                log << line.dump() << "\n" << std::flush;
            }
        }
        unread.clear();
    };
    const auto start = std::chrono::steady_clock::now();
    const auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
    for (;;) {
        // 0: go on; 1 + stop_reason: stop. Rank 0 decides for all.
        int code = 0;
        if (step >= opt.steps) code = 1 + static_cast<int>(stop_reason::steps);
        else if (opt.stop_after > 0 && step - result.first_step >= opt.stop_after) code = 1 + static_cast<int>(stop_reason::stop_after);
        else if (opt.time_budget_s > 0 && elapsed() >= opt.time_budget_s) code = 1 + static_cast<int>(stop_reason::time_budget);
        code = comm.decide(code, fmt::format("the stop decision before step {}", step));
        if (code != 0) {
            result.reason = static_cast<stop_reason>(code - 1);
            break;
        }
        loop_detail::apply_fault(comm.rank(), step);
        unread.push_back(do_step(step));
        ++step;
        const bool log_step = step % std::max<std::int64_t>(opt.log_every, 1) == 0 || step == opt.steps;
        const bool checkpoint_step = opt.checkpoint_every > 0 && step % opt.checkpoint_every == 0;
        if (log_step || checkpoint_step || step % std::max<std::int64_t>(opt.read_every, 1) == 0) read_reports();
        if (checkpoint_step) {
            prepare_save();
            if (root) save();
        }
    }
    read_reports();
    bar.finish();
    result.seconds = elapsed();
    result.steps = step;
    prepare_save();
    if (root) save();
    comm.barrier("the end of training (rank 0 saves the last checkpoint)");
    return result;
}

template <class Comm, class Step, class Save>
loop_result run_training_loop(std::int64_t& step, const loop_options& opt, Comm& comm, const std::filesystem::path& log_path,
                              bool resume, Step&& do_step, Save&& save) {
    return run_training_loop(step, opt, comm, log_path, resume, std::forward<Step>(do_step), std::forward<Save>(save), [] {});
}

} // namespace vediff::train
