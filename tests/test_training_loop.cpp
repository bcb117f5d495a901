#define BOOST_TEST_MODULE training_loop
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/errors.hpp"
#include "support/scratch_dir.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/distributed/communicator.hpp"
#include "vediff/distributed/data_parallel.hpp"
#include "vediff/nn/compose.hpp"
#include "vediff/nn/linear.hpp"
#include "vediff/train/loop.hpp"

using namespace vediff;
using namespace vediff::testing;

namespace {

std::vector<std::int64_t> logged_steps(const std::filesystem::path& log) {
    std::vector<std::int64_t> steps;
    std::ifstream in(log);
    for (std::string line; std::getline(in, line);)
        if (!line.empty()) steps.push_back(nlohmann::json::parse(line).at("step").get<std::int64_t>());
    return steps;
}

train::step_report report_of(std::int64_t step) {
    train::step_report r;
    r.loss = double(step);
    r.log = {{"loss", double(step)}};
    return r;
}

/// Rank 1 of 2 whose stop decisions come from a script (rank 0's), as decide() hands them out.
struct scripted_rank1 {
    static constexpr bool is_distributed = true;
    std::vector<int> decisions;
    std::size_t next = 0;
    int barriers = 0;
    int rank() const { return 1; }
    int size() const { return 2; }
    int local_rank() const { return 1; }
    template <class T>
    void all_reduce_sum(T*, std::size_t, std::string_view) {}
    template <class T>
    void broadcast(T*, std::size_t, int, std::string_view) {}
    int decide(int, std::string_view) { return decisions.at(next++); }
    void arrive(std::string_view) {}
    void barrier(std::string_view) { ++barriers; }
};
static_assert(distributed::communicator<scripted_rank1>);

/// One of two ranks whose partner always holds three times this rank's values: an all-reduce
/// sum multiplies by 4, so a mean over the ranks doubles every value in place.
/// A started all-reduce completes in wait(), or in test() too when fast (as over a fast network).
struct partner_holds_three_times {
    static constexpr bool is_distributed = true;
    static constexpr bool overlaps_backward = true;
    int arrivals = 0, reductions = 0, started = 0;
    bool fast = false;
    int rank() const { return 0; }
    int size() const { return 2; }
    int local_rank() const { return 0; }
    template <class T>
    void all_reduce_sum(T* data, std::size_t n, std::string_view) {
        ++reductions;
        for (std::size_t i = 0; i < n; ++i) data[i] *= T(4);
    }
    struct request {
        std::function<void()> complete;
    };
    template <class T>
    request start_all_reduce_sum(T* data, std::size_t n, std::string_view what) {
        ++started;
        return {[this, data, n, what = std::string(what)] { all_reduce_sum(data, n, what); }};
    }
    bool test(request& r) {
        if (!fast) return false;
        wait(r);
        return true;
    }
    void wait(request& r) {
        if (r.complete) r.complete();
        r.complete = nullptr;
    }
    template <class T>
    void broadcast(T*, std::size_t, int, std::string_view) {}
    int decide(int code, std::string_view) { return code; }
    void arrive(std::string_view) { ++arrivals; }
    void barrier(std::string_view) {}
};
static_assert(distributed::communicator<partner_holds_three_times>);

using two_layers = nn::sequential<nn::linear<float>, nn::linear<float>>;

two_layers make_model() { return two_layers(nn::linear<float>(3, 4, true, 1), nn::linear<float>(4, 2, true, 2)); }

/// Gives every gradient element a distinct value (100·parameter + element).
std::vector<std::vector<float>> set_distinct_gradients(two_layers& model) {
    std::vector<std::vector<float>> values;
    model.for_each_parameter([&](const std::string&, nn::parameter<float, cpu>& p) {
        std::vector<float> v(static_cast<std::size_t>(p.grad.numel()));
        for (std::size_t i = 0; i < v.size(); ++i) v[i] = float(100 * values.size() + i);
        memory<cpu>::copy(p.grad.data(), v.data(), v.size() * sizeof(float));
        values.push_back(v);
    }, std::string{});
    return values;
}

std::vector<std::vector<float>> gradients(two_layers& model) {
    std::vector<std::vector<float>> values;
    model.for_each_parameter([&](const std::string&, nn::parameter<float, cpu>& p) { values.push_back(p.grad.to_vector()); }, std::string{});
    return values;
}

} // namespace

BOOST_AUTO_TEST_CASE(runs_to_the_end_with_checkpoints_and_log_lines_at_their_intervals) {
    scratch_dir dir("training_loop_end");
    distributed::single_process one;
    std::int64_t step = 0;
    std::vector<std::int64_t> saves;
    const train::loop_options opt{.steps = 10, .log_every = 3, .checkpoint_every = 4, .progress = {.label = "test", .style = util::progress_style::silent}};
    const auto r = train::run_training_loop(step, opt, one, dir.path / "log.jsonl", false, report_of, [&] { saves.push_back(step); });
    BOOST_TEST(r.finished());
    BOOST_TEST(train::to_string(r.reason) == "steps");
    BOOST_TEST(step == 10);
    BOOST_TEST(r.steps_this_run() == 10);
    BOOST_TEST((saves == std::vector<std::int64_t>{4, 8, 10}));
    BOOST_TEST((logged_steps(dir.path / "log.jsonl") == std::vector<std::int64_t>{3, 6, 9, 10}));
    // The smoothed loss is the 0.98 average of the losses 0 .. 9.
    double smoothed = 0;
    for (int k = 1; k < 10; ++k) smoothed = 0.98 * smoothed + 0.02 * k;
    BOOST_TEST(r.smoothed_loss == smoothed, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(stop_after_leaves_the_run_unfinished_and_a_resume_continues_its_log) {
    scratch_dir dir("training_loop_resume");
    distributed::single_process one;
    std::int64_t step = 0;
    int saves = 0;
    train::loop_options opt{.steps = 10, .stop_after = 4, .log_every = 1, .progress = {.label = "test", .style = util::progress_style::silent}};
    const auto first = train::run_training_loop(step, opt, one, dir.path / "log.jsonl", false, report_of, [&] { ++saves; });
    BOOST_TEST(!first.finished());
    BOOST_TEST(first.to_json().at("stopped_by").get<std::string>() == "stop_after");
    BOOST_TEST(step == 4);
    BOOST_TEST(saves == 1);  // at the end only
    // A line past the checkpoint (a crash after logging step 5, before its checkpoint) is dropped.
    std::ofstream(dir.path / "log.jsonl", std::ios::app) << R"({"step":5,"loss":5})" << "\n";
    opt.stop_after = 0;
    const auto second = train::run_training_loop(step, opt, one, dir.path / "log.jsonl", true, report_of, [&] { ++saves; });
    BOOST_TEST(second.finished());
    BOOST_TEST(second.first_step == 4);
    BOOST_TEST(second.steps_this_run() == 6);
    BOOST_TEST((logged_steps(dir.path / "log.jsonl") == std::vector<std::int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
}

// Reports whose values are read later (a GPU's step, step_report::read) give the same log and
// smoothed loss as reports known at once; they are read in step order, every read_every steps
// and always before a log line, a checkpoint and the end, so that a save sees every earlier step
// read, and a read that throws (a non-finite loss) comes before the next save.
BOOST_AUTO_TEST_CASE(reports_read_later_give_the_same_log_and_are_read_before_each_save) {
    const auto deferred_report = [](std::vector<std::int64_t>& reads) {
        return [&reads](std::int64_t s) {
            train::step_report r;
            r.log = {{"epoch", 0}};
            r.read = [&reads, s](train::step_report& report) {
                reads.push_back(s);
                report.loss = double(s);
                report.log["loss"] = double(s);
            };
            return r;
        };
    };
    scratch_dir now_dir("training_loop_read_now"), later_dir("training_loop_read_later");
    distributed::single_process one;
    const train::loop_options now_opt{.steps = 11, .log_every = 3, .checkpoint_every = 4,
                                      .progress = {.label = "test", .style = util::progress_style::silent}};
    train::loop_options later_opt = now_opt;
    later_opt.read_every = 5;
    later_opt.log_every = 6;
    std::vector<std::int64_t> now_reads, later_reads, reads_at_save;
    std::int64_t step = 0;
    const auto now = train::run_training_loop(step, now_opt, one, now_dir.path / "log.jsonl", false, deferred_report(now_reads), [] {});
    step = 0;
    const auto later = train::run_training_loop(step, later_opt, one, later_dir.path / "log.jsonl", false, deferred_report(later_reads),
                                                [&] { reads_at_save.push_back(static_cast<std::int64_t>(later_reads.size())); });
    std::vector<std::int64_t> in_order(11);
    for (std::int64_t s = 0; s < 11; ++s) in_order[static_cast<std::size_t>(s)] = s;
    BOOST_TEST(now_reads == in_order, boost::test_tools::per_element());
    BOOST_TEST(later_reads == in_order, boost::test_tools::per_element());
    // Saves at steps 4 and 8 (checkpoints) and 11 (the end) each see every earlier step read.
    BOOST_TEST(reads_at_save == (std::vector<std::int64_t>{4, 8, 11}), boost::test_tools::per_element());
    BOOST_TEST(later.smoothed_loss == now.smoothed_loss);
    BOOST_TEST((logged_steps(later_dir.path / "log.jsonl") == std::vector<std::int64_t>{6, 11}));
    // Step 6's line (the second of 3, 6, 9, 11; the first of 6, 11) is the same line.
    std::ifstream now_log(now_dir.path / "log.jsonl"), later_log(later_dir.path / "log.jsonl");
    std::string now_line, later_line;
    for (int i = 0; i < 2; ++i) std::getline(now_log, now_line);
    std::getline(later_log, later_line);
    BOOST_TEST(later_line == now_line);
    BOOST_TEST(nlohmann::json::parse(later_line).at("loss").get<double>() == 5.0);

    // A read that throws at step 6 (the 7th step) stops the run before the checkpoint at step 8.
    scratch_dir failing_dir("training_loop_read_throws");
    std::vector<std::int64_t> saves;
    step = 0;
    train::loop_options failing_opt = later_opt;
    failing_opt.read_every = 8;
    BOOST_CHECK_THROW(train::run_training_loop(step, failing_opt, one, failing_dir.path / "log.jsonl", false,
                                               [](std::int64_t s) {
                                                   train::step_report r;
                                                   r.read = [s](train::step_report&) {
                                                       if (s == 6) throw numeric_error("the loss is nan");
                                                   };
                                                   return r;
                                               },
                                               [&] { saves.push_back(step); }),
                      numeric_error);
    BOOST_TEST(saves == (std::vector<std::int64_t>{4}), boost::test_tools::per_element());
}

// The time budget is part of the run's definition: a run it ends is finished.
BOOST_AUTO_TEST_CASE(a_spent_time_budget_finishes_the_run) {
    scratch_dir dir("training_loop_budget");
    distributed::single_process one;
    std::int64_t step = 0;
    const train::loop_options opt{.steps = 100000, .time_budget_s = 0.05, .progress = {.label = "test", .style = util::progress_style::silent}};
    const auto r = train::run_training_loop(step, opt, one, dir.path / "log.jsonl", false, [](std::int64_t s) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        return report_of(s);
    }, [] {});
    BOOST_TEST(r.finished());
    BOOST_TEST(train::to_string(r.reason) == "time_budget");
    BOOST_TEST(step > 0);
    BOOST_TEST(step < 100000);
}

// Another rank stops when rank 0 says so, whatever its own count, and writes nothing.
BOOST_AUTO_TEST_CASE(other_ranks_follow_rank_0s_decision_and_write_nothing) {
    scratch_dir dir("training_loop_rank1");
    scripted_rank1 comm{.decisions = {0, 0, 0, 1 + int(train::stop_reason::time_budget)}};
    std::int64_t step = 0;
    int saves = 0;
    const train::loop_options opt{.steps = 10, .log_every = 1, .checkpoint_every = 1};
    const auto r = train::run_training_loop(step, opt, comm, dir.path / "log.jsonl", false, report_of, [&] { ++saves; });
    BOOST_TEST(step == 3);
    BOOST_TEST(train::to_string(r.reason) == "time_budget");
    BOOST_TEST(saves == 0);
    BOOST_TEST(!std::filesystem::exists(dir.path / "log.jsonl"));
    BOOST_TEST(comm.barriers == 1);  // waits for rank 0's last checkpoint
}

BOOST_AUTO_TEST_CASE(a_malformed_fault_request_is_an_error) {
    ::setenv("VEDIFF_FAULT", "explode:1:3", 1);
    const auto kind = error_message<std::invalid_argument>([] { (void)train::loop_detail::injected_fault(1, 3); });
    BOOST_TEST(contains(kind, "'explode', not kill or hang"), kind);
    ::setenv("VEDIFF_FAULT", "kill-1-3", 1);
    const auto form = error_message<std::invalid_argument>([] { (void)train::loop_detail::injected_fault(1, 3); });
    BOOST_TEST(contains(form, "expected kill:RANK:STEP"), form);
    ::setenv("VEDIFF_FAULT", "hang:1:3", 1);
    BOOST_TEST(!train::loop_detail::injected_fault(0, 3).has_value());
    BOOST_TEST(!train::loop_detail::injected_fault(1, 2).has_value());
    BOOST_TEST(*train::loop_detail::injected_fault(1, 3) == "hang");
    ::unsetenv("VEDIFF_FAULT");
    BOOST_TEST(!train::loop_detail::injected_fault(1, 3).has_value());
}

BOOST_AUTO_TEST_CASE(buckets_fill_in_reverse_registration_order) {
    const std::vector<std::size_t> sizes{4, 10, 3, 6};
    const auto slots = distributed::plan_buckets(sizes, 10);
    // 6 and 3 share bucket 0; 10 fills bucket 1; 4 starts bucket 2.
    BOOST_TEST(slots[3].bucket == 0u);
    BOOST_TEST(slots[3].offset == 0u);
    BOOST_TEST(slots[2].bucket == 0u);
    BOOST_TEST(slots[2].offset == 6u);
    BOOST_TEST(slots[1].bucket == 1u);
    BOOST_TEST(slots[1].offset == 0u);
    BOOST_TEST(slots[0].bucket == 2u);
    BOOST_TEST(slots[0].size == 4u);
    // A gradient larger than a bucket gets one of its own.
    const std::vector<std::size_t> large{25, 2};
    const auto big = distributed::plan_buckets(large, 10);
    BOOST_TEST(big[1].bucket == 0u);
    BOOST_TEST(big[0].bucket == 1u);
    BOOST_TEST(big[0].size == 25u);
}

// Through buckets of 10 floats, every element comes back to its own place, averaged with the
// partner's. The 3→4→2 model's gradients hold 12, 4, 8 and 2 values (registration order); in
// reverse they fill bucket 0 with 2 + 8 (the second at offset 2), bucket 1 with 4, bucket 2 with
// the 12 (larger than a bucket, alone).
BOOST_AUTO_TEST_CASE(gradients_come_back_averaged_to_their_own_places) {
    auto model = make_model();
    partner_holds_three_times comm;
    distributed::data_parallel<partner_holds_three_times, two_layers> parallel(comm, model, 10 * sizeof(float));
    BOOST_TEST(parallel.bucket_count() == 3u);
    BOOST_TEST(parallel.slots()[2].bucket == 0u);
    BOOST_TEST(parallel.slots()[2].offset == 2u);
    const auto before = set_distinct_gradients(model);
    parallel.reduce_gradients(model, 7);
    const auto after = gradients(model);
    BOOST_TEST_REQUIRE(after.size() == before.size());
    for (std::size_t p = 0; p < before.size(); ++p)
        for (std::size_t i = 0; i < before[p].size(); ++i) BOOST_TEST(after[p][i] == 2 * before[p][i]);
    BOOST_TEST(comm.arrivals == 1);
    BOOST_TEST(comm.reductions == int(parallel.bucket_count()));
    BOOST_TEST((parallel.mean({1.5, -3.0}, "values") == std::vector<double>{3.0, -6.0}));
    BOOST_TEST(parallel.shard().index == 0u);
    BOOST_TEST(parallel.shard().count == 2u);
}

// Announced as backward finishes them (nn::announce_final_gradients), buckets start one per
// announced layer: bucket 0 (the second layer's 8 + 2) when the second layer is announced,
// bucket 1 when the first is (bucket 2, also ready then, waits for reduce_gradients); the
// averages are those of the all-at-the-end reduction, and nothing is sent twice. Which buckets
// start when must not depend on whether earlier ones completed (every rank must start the same
// collectives in the same order): over a slow network the same buckets start.
BOOST_AUTO_TEST_CASE(buckets_start_as_backward_announces_their_gradients) {
    auto model = make_model();
    partner_holds_three_times comm;
    comm.fast = true;
    distributed::data_parallel<partner_holds_three_times, two_layers> parallel(comm, model, 10 * sizeof(float));
    const auto before = set_distinct_gradients(model);
    parallel.begin_backward(model, 3);
    BOOST_TEST(comm.started == 0);
    nn::announce_final_gradients(std::get<1>(model.layers));
    BOOST_TEST(comm.started == 1);
    nn::announce_final_gradients(std::get<0>(model.layers));
    BOOST_TEST(comm.started == 2);
    BOOST_TEST(comm.reductions == 1);  // the fast network completed bucket 0 at the next test
    parallel.reduce_gradients(model, 3);
    BOOST_TEST(comm.started == 3);
    BOOST_TEST(comm.reductions == 3);
    BOOST_TEST(parallel.last_reduction().started_during_backward == 2u);
    const auto after = gradients(model);
    for (std::size_t p = 0; p < before.size(); ++p)
        for (std::size_t i = 0; i < before[p].size(); ++i) BOOST_TEST(after[p][i] == 2 * before[p][i]);
    // Outside begin_backward … reduce_gradients nobody listens: announcing starts nothing.
    nn::announce_final_gradients(std::get<1>(model.layers));
    BOOST_TEST(comm.started == 3);

    // Over a slow network (nothing completes before wait) the same buckets start at the same points.
    comm.fast = false;
    comm.started = comm.reductions = 0;
    const auto again = set_distinct_gradients(model);
    parallel.begin_backward(model, 4);
    nn::announce_final_gradients(std::get<1>(model.layers));
    BOOST_TEST(comm.started == 1);
    nn::announce_final_gradients(std::get<0>(model.layers));
    BOOST_TEST(comm.started == 2);
    BOOST_TEST(comm.reductions == 0);
    parallel.reduce_gradients(model, 4);
    BOOST_TEST(comm.started == 3);
    BOOST_TEST(parallel.last_reduction().started_during_backward == 2u);
    const auto averaged = gradients(model);
    for (std::size_t p = 0; p < again.size(); ++p)
        for (std::size_t i = 0; i < again[p].size(); ++i) BOOST_TEST(averaged[p][i] == 2 * again[p][i]);
}

// What backward did not announce is still sent by reduce_gradients; overlap off sends all there;
// a layer announced twice in one backward (shared weights, accumulation) is an error.
BOOST_AUTO_TEST_CASE(unannounced_buckets_are_sent_at_the_end_and_double_announcements_refused) {
    auto model = make_model();
    partner_holds_three_times comm;
    distributed::data_parallel<partner_holds_three_times, two_layers> parallel(comm, model, 10 * sizeof(float));
    auto before = set_distinct_gradients(model);
    parallel.begin_backward(model, 4);
    nn::announce_final_gradients(std::get<1>(model.layers));
    parallel.reduce_gradients(model, 4);
    BOOST_TEST(parallel.last_reduction().started_during_backward == 1u);
    BOOST_TEST(comm.reductions == 3);
    auto after = gradients(model);
    for (std::size_t p = 0; p < before.size(); ++p)
        for (std::size_t i = 0; i < before[p].size(); ++i) BOOST_TEST(after[p][i] == 2 * before[p][i]);

    distributed::data_parallel<partner_holds_three_times, two_layers> later(comm, model, 10 * sizeof(float), false);
    comm.started = 0;
    later.begin_backward(model, 5);
    nn::announce_final_gradients(std::get<1>(model.layers));
    BOOST_TEST(comm.started == 0);
    later.reduce_gradients(model, 5);
    BOOST_TEST(comm.started == 3);

    parallel.begin_backward(model, 6);
    nn::announce_final_gradients(std::get<1>(model.layers));
    const auto twice = [&] { nn::announce_final_gradients(std::get<1>(model.layers)); };
    BOOST_CHECK_EXCEPTION(twice(), std::logic_error, [](const std::logic_error& e) {
        return std::string(e.what()).find("announced final twice in the backward of step 6") != std::string::npos;
    });
}

BOOST_AUTO_TEST_CASE(one_process_leaves_gradients_alone) {
    auto model = make_model();
    distributed::single_process one;
    distributed::data_parallel<distributed::single_process, two_layers> parallel(one, model);
    BOOST_TEST(parallel.bucket_count() == 0u);
    const auto before = set_distinct_gradients(model);
    parallel.reduce_gradients(model, 0);
    BOOST_TEST((gradients(model) == before));
    BOOST_TEST(parallel.mean(2.5, "value") == 2.5);
}
