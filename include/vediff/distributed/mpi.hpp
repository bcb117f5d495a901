#pragma once
// The MPI communicator: one process per rank, started by `mpirun -np N program ...` (OpenMPI,
// or any MPI-3 implementation). Needs <mpi.h>: link vediff::mpi (CMake, VEDIFF_WITH_MPI).
//
// Every collective is non-blocking (MPI_Iallreduce, MPI_Ibcast, point-to-point check-ins) and
// waited for with a deadline, so that a rank that died or hangs cannot stall the others forever:
// past `timeout_s` the waiting rank prints what it waited for (which rank, which step) and ends
// the job with MPI_Abort, which makes mpirun stop every rank. (A rank killed outright is
// reported by mpirun itself at once: "mpirun noticed that process rank R ... exited on signal 9".)
#include <chrono>
#include <span>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <mpi.h>

#include "vediff/distributed/communicator.hpp"

namespace vediff::distributed {

namespace mpi_detail {

template <class T>
MPI_Datatype datatype() {
    if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
    else if constexpr (std::is_same_v<T, double>) return MPI_DOUBLE;
    else if constexpr (std::is_same_v<T, std::int32_t>) return MPI_INT32_T;
    else if constexpr (std::is_same_v<T, std::int64_t>) return MPI_INT64_T;
    else if constexpr (std::is_same_v<T, std::uint8_t>) return MPI_UINT8_T;
    else static_assert(sizeof(T) == 0, "no MPI datatype for this element type");
}

/// MPI_Init_thread on first use (FUNNELED: only the main thread calls MPI; OpenMP threads never
/// do), MPI_Finalize at exit when vediff initialized it.
inline void ensure_initialized() {
    struct environment {
        bool owned = false;
        environment() {
            int initialized = 0;
            MPI_Initialized(&initialized);
            if (!initialized) {
                int provided = 0;
                if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
                    throw std::runtime_error("MPI_Init_thread failed");
                owned = true;
            }
        }
        ~environment() {
            int finalized = 0;
            MPI_Finalized(&finalized);
            if (owned && !finalized) MPI_Finalize();
        }
    };
    static environment env;
}

} // namespace mpi_detail

class mpi {
public:
    static constexpr const char* name = "mpi";
    static constexpr bool is_distributed = true;
    /// Gradient buckets wait for the end of backward unless data_parallel is told otherwise:
    /// overlapping measured slower on CPU ranks (docs/benchmarks.md, distributed/data_parallel.hpp).
    static constexpr bool overlaps_backward = false;
    static constexpr double default_timeout_s = 600;

    /// Joins MPI_COMM_WORLD (initializing MPI if needed). timeout_s bounds every wait.
    explicit mpi(double timeout_s = default_timeout_s) : timeout_s_(timeout_s) {
        if (!(timeout_s > 0)) throw std::invalid_argument(fmt::format("mpi communicator: timeout {} s must be > 0", timeout_s));
        mpi_detail::ensure_initialized();
        MPI_Comm_dup(MPI_COMM_WORLD, &world_);
        MPI_Comm_rank(world_, &rank_);
        MPI_Comm_size(world_, &size_);
        MPI_Comm node;
        MPI_Comm_split_type(world_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
        MPI_Comm_rank(node, &local_rank_);
        MPI_Comm_size(node, &local_size_);
        MPI_Comm_free(&node);
    }
    mpi(const mpi&) = delete;
    mpi& operator=(const mpi&) = delete;
    ~mpi() {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) MPI_Comm_free(&world_);
    }

    int rank() const { return rank_; }
    int size() const { return size_; }
    int local_rank() const { return local_rank_; }
    int local_size() const { return local_size_; }
    double timeout_s() const { return timeout_s_; }
    void set_timeout(double seconds) {
        if (!(seconds > 0)) throw std::invalid_argument(fmt::format("mpi communicator: timeout {} s must be > 0", seconds));
        timeout_s_ = seconds;
    }

    /// data[i] = Σ over ranks of data[i], in place.
    template <class T>
    void all_reduce_sum(T* data, std::size_t n, std::string_view what) {
        auto r = start_all_reduce_sum(data, n, what);
        wait(r);
    }

    /// A collective in flight: started by start_all_reduce_sum, finished by test or wait.
    struct request {
        MPI_Request handle = MPI_REQUEST_NULL;
        std::string what;
    };
    /// Starts data[i] = Σ over ranks of data[i]; data must stay untouched until test() says done
    /// or wait() returns. Every rank must start its collectives in the same order.
    template <class T>
    request start_all_reduce_sum(T* data, std::size_t n, std::string_view what) {
        request r{MPI_REQUEST_NULL, fmt::format("the all-reduce of {} ({} values)", what, n)};
        if (n > 0) MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(n), mpi_detail::datatype<T>(), MPI_SUM, world_, &r.handle);
        return r;
    }
    /// Lets the collective progress (MPI moves non-blocking collectives on only inside MPI calls);
    /// true once it is complete.
    bool test(request& r) {
        if (r.handle == MPI_REQUEST_NULL) return true;
        int done = 0;
        MPI_Test(&r.handle, &done, MPI_STATUS_IGNORE);
        return done != 0;
    }
    /// Waits for the collective, within the timeout.
    void wait(request& r) {
        if (r.handle == MPI_REQUEST_NULL) return;
        wait_for(r.handle, [&] { return fmt::format("{} did not complete", r.what); });
    }

    template <class T>
    void broadcast(T* data, std::size_t n, int root, std::string_view what) {
        if (n == 0) return;
        MPI_Request request;
        MPI_Ibcast(data, static_cast<int>(n), mpi_detail::datatype<T>(), root, world_, &request);
        wait_for(request, [&] { return fmt::format("the broadcast of {} from rank {} did not arrive", what, root); });
    }

    /// Each rank's block of data (counts[r] values at displacements[r]) on every rank, in place.
    template <class T>
    void all_gather(T* data, std::span<const int> counts, std::span<const int> displacements, std::string_view what) {
        MPI_Request request;
        MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, counts.data(), displacements.data(), mpi_detail::datatype<T>(), world_,
                        &request);
        wait_for(request, [&] { return fmt::format("the all-gather of {} did not complete", what); });
    }

    /// Rank 0's code on every rank.
    int decide(int code, std::string_view what) {
        broadcast(&code, 1, 0, what);
        return code;
    }

    /// Every rank reports reaching `what` (its n-th check-in) to rank 0, which waits for all of
    /// them and names the ranks that do not come; then rank 0 lets them go on. Called before a
    /// collective, it turns a lost rank into an error that says which rank and where.
    void arrive(std::string_view what) {
        constexpr int arrive_tag = 7101, release_tag = 7102;
        std::int64_t token = ++arrivals_;
        if (rank_ == 0) {
            std::vector<std::int64_t> tokens(static_cast<std::size_t>(size_));
            std::vector<MPI_Request> requests(static_cast<std::size_t>(size_ - 1));
            for (int r = 1; r < size_; ++r)
                MPI_Irecv(&tokens[static_cast<std::size_t>(r)], 1, MPI_INT64_T, r, arrive_tag, world_, &requests[static_cast<std::size_t>(r - 1)]);
            wait_all(requests, [&](const std::vector<int>& missing) {
                return fmt::format("rank{} {} did not reach {}", missing.size() > 1 ? "s" : "", fmt::join(missing, ", "), what);
            });
            for (int r = 1; r < size_; ++r)
                if (tokens[static_cast<std::size_t>(r)] != token)
                    fail(fmt::format("rank {} is at its check-in {} while rank 0 is at {} ({}): the ranks are out of step", r,
                                     tokens[static_cast<std::size_t>(r)], token, what));
            std::vector<MPI_Request> releases(static_cast<std::size_t>(size_ - 1));
            for (int r = 1; r < size_; ++r)
                MPI_Isend(&token, 1, MPI_INT64_T, r, release_tag, world_, &releases[static_cast<std::size_t>(r - 1)]);
            wait_all(releases, [&](const std::vector<int>& missing) {
                return fmt::format("ranks {} did not take the release of {}", fmt::join(missing, ", "), what);
            });
        } else {
            MPI_Request request;
            MPI_Isend(&token, 1, MPI_INT64_T, 0, arrive_tag, world_, &request);
            wait_for(request, [&] { return fmt::format("rank 0 did not take this rank's arrival at {}", what); });
            std::int64_t released = -1;
            MPI_Irecv(&released, 1, MPI_INT64_T, 0, release_tag, world_, &request);
            wait_for(request, [&] { return fmt::format("rank 0 did not release {} (rank 0 or another rank is dead or hung)", what); });
        }
    }

    void barrier(std::string_view what) {
        MPI_Request request;
        MPI_Ibarrier(world_, &request);
        wait_for(request, [&] { return fmt::format("not every rank reached {}", what); });
    }

    /// Prints "vediff: rank R of N: message" and ends every rank of the job.
    [[noreturn]] void fail(const std::string& message) const {
        fmt::print(stderr, "vediff: rank {} of {}: {}\n", rank_, size_, message);
        std::fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 3);
        std::abort();  // MPI_Abort does not return
    }

private:
    using clock = std::chrono::steady_clock;

    // Polls with a short spin, then sleeps of up to 1 ms (a waiting rank should not take the core
    // a computing rank needs); past the deadline, fails with describe()'s text.
    template <class Describe>
    void wait_for(MPI_Request& request, Describe&& describe) {
        const auto deadline = clock::now() + std::chrono::duration<double>(timeout_s_);
        for (int polls = 0;; ++polls) {
            int done = 0;
            MPI_Test(&request, &done, MPI_STATUS_IGNORE);
            if (done) return;
            if (clock::now() > deadline) fail(fmt::format("{} within {} s", describe(), timeout_s_));
            pause(polls);
        }
    }

    template <class Describe>
    void wait_all(std::vector<MPI_Request>& requests, Describe&& describe) {
        const auto deadline = clock::now() + std::chrono::duration<double>(timeout_s_);
        std::vector<bool> done(requests.size(), false);
        for (int polls = 0;; ++polls) {
            bool all = true;
            for (std::size_t i = 0; i < requests.size(); ++i) {
                if (done[i]) continue;
                int flag = 0;
                MPI_Test(&requests[i], &flag, MPI_STATUS_IGNORE);
                done[i] = flag != 0;
                all = all && done[i];
            }
            if (all) return;
            if (clock::now() > deadline) {
                std::vector<int> missing;  // request i is rank i + 1's
                for (std::size_t i = 0; i < requests.size(); ++i)
                    if (!done[i]) missing.push_back(static_cast<int>(i) + 1);
                fail(fmt::format("{} within {} s", describe(missing), timeout_s_));
            }
            pause(polls);
        }
    }

    static void pause(int polls) {
        if (polls < 2000) return;
        std::this_thread::sleep_for(std::chrono::microseconds(polls < 4000 ? 20 : 500));
    }

    MPI_Comm world_ = MPI_COMM_NULL;
    std::int64_t arrivals_ = 0;
    int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
    double timeout_s_;
};

static_assert(communicator<mpi>);

} // namespace vediff::distributed
