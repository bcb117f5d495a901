#!/usr/bin/env bash
# Data-parallel scaling on this machine: the same steps on 1 and 2 MPI ranks, one OpenMP thread
# each, then 2 ranks with AdamW sharded (ZeRO-1) (docs/benchmarks.md). Usage: benchmarks/run_mpi.sh [build dir, default build]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
cores=$(nproc)
cmake --build "$BUILD" --target bench_data_parallel -j "$cores"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "host: $(lscpu | sed -n 's/^Model name: *//p'), $cores cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for ranks in 1 2; do
    mpirun -np "$ranks" --bind-to core "$BUILD/benchmarks/bench_data_parallel"
done
mpirun -np 2 --bind-to core "$BUILD/benchmarks/bench_data_parallel" --zero1
