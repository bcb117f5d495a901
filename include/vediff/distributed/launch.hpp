#pragma once
// The communicator a program was launched for: under `mpirun -np N` (N > 1) an MPI communicator
// over the N processes, else a single process. A program built without MPI (VEDIFF_WITH_MPI
// not defined: vediff::mpi not linked) refuses to run as one of several MPI processes, where
// each process would otherwise train alone and all would write the same files.
//
// PyTorch's launcher variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, as torchrun sets
// them) are not read: connecting the processes from them needs a transport of its own, which
// vediff leaves to MPI. Launch with mpirun (or srun under Slurm with PMIx).
#include <cstdlib>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

#include "vediff/distributed/communicator.hpp"

#ifdef VEDIFF_WITH_MPI
#include "vediff/distributed/mpi.hpp"
#endif

namespace vediff::distributed {

/// The number of processes an MPI launcher started this one among (1 when there is none), read
/// from the launcher's environment.
inline int launcher_world_size() {
    for (const char* key : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"})
        if (const char* v = std::getenv(key); v && *v) return std::max(1, std::atoi(v));
    return 1;
}

/// f(communicator&) with the communicator of this launch; returns what f returns.
template <class F>
decltype(auto) with_launch_communicator(double timeout_s, F&& f) {
    const int world = launcher_world_size();
#ifdef VEDIFF_WITH_MPI
    if (world > 1) {
        static mpi comm(timeout_s);  // one per process: MPI joins once, and stays until exit
        comm.set_timeout(timeout_s);
        return f(comm);
    }
#else
    (void)timeout_s;
    if (world > 1)
        throw std::runtime_error(fmt::format("this process is one of {} started by an MPI launcher, but vediff was built without MPI "
                                             "(VEDIFF_WITH_MPI): each would train alone and write the same files. Rebuild with "
                                             "OpenMPI installed (libopenmpi-dev), or run one process.",
                                             world));
#endif
    single_process comm;
    return f(comm);
}

} // namespace vediff::distributed
