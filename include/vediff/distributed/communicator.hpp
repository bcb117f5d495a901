#pragma once
// The communicator of a training run, chosen like the device: a type the trainers are templated
// on. single_process is today's one-process run and compiles to nothing; distributed/mpi.hpp
// runs one process per rank over MPI (CPU tensors; cuda tensors staged through the host).
//
// A communicator offers:
//   rank(), size(), local_rank()       this process among all, and among those on its node;
//   all_reduce_sum(T* data, n, what)   in place over host memory (T = float or double);
//   broadcast(T* data, n, root, what);
//   all_gather(T* data, counts, displacements, what)   every rank's block on every rank, in place;
//   decide(code, what)                 rank 0's code, handed to every rank (the loop's stop
//                                      decision), or a failure naming rank 0 when it does not come;
//   arrive(what)                       every rank reports it reached `what`; rank 0 waits for
//                                      all and fails naming those that did not come;
//   barrier(what).
// Every wait is bounded by the communicator's timeout; a communicator that times out ends the
// whole job with a message naming the rank and the step (distributed/mpi.hpp).
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace vediff::distributed {

template <class C>
concept communicator = requires(C& c, float* f, double* d, std::size_t n, std::string_view what) {
    { c.rank() } -> std::convertible_to<int>;
    { c.size() } -> std::convertible_to<int>;
    { c.local_rank() } -> std::convertible_to<int>;
    c.all_reduce_sum(f, n, what);
    c.all_reduce_sum(d, n, what);
    c.broadcast(f, n, 0, what);
    { c.decide(0, what) } -> std::convertible_to<int>;
    c.arrive(what);
    c.barrier(what);
};

/// One process: every collective is the identity (and inlines to nothing).
struct single_process {
    static constexpr const char* name = "single_process";
    static constexpr bool is_distributed = false;

    int rank() const { return 0; }
    int size() const { return 1; }
    int local_rank() const { return 0; }
    template <class T>
    void all_reduce_sum(T*, std::size_t, std::string_view) {}
    template <class T>
    void broadcast(T*, std::size_t, int, std::string_view) {}
    template <class T>
    void all_gather(T*, std::span<const int>, std::span<const int>, std::string_view) {}
    int decide(int code, std::string_view) { return code; }
    void arrive(std::string_view) {}
    void barrier(std::string_view) {}
};

static_assert(communicator<single_process>);

} // namespace vediff::distributed
