#!/usr/bin/env bash
# The GPU checks of the cuda backend (issue 9), in one go, for a machine with a GPU:
# configures and builds the cuda tests and benchmarks into build-cuda (Release, nvcc from
# /usr/local/cuda), runs the cuda tests (ctest -L cuda: device parity, the models, the allocator)
# then bench_cuda in FP32 and in TF32, and the PyTorch peer (torch_dit_cuda.py) where this machine
# has a torch with CUDA (Debian's python3-torch has none: the script then says so).
#   benchmarks/run_cuda.sh            from the repository root (or anywhere)
# It is for a machine with a GPU and fails without one: `nvidia-smi -L` must list a GPU, and then
# any cuda test that reports itself skipped is a failure (a skip there means the GPU was not used).
# Extra: CUDA_ARCHITECTURES=80 (say) to build for that architecture only (default: native, this
# machine's GPUs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-cuda"
arch="${CUDA_ARCHITECTURES:-native}"

if ! gpus="$(nvidia-smi -L 2>&1)" || ! grep -q '^GPU ' <<<"$gpus"; then
    echo "run_cuda.sh: no GPU listed by nvidia-smi -L (${gpus:-no output}); this script needs one" >&2
    exit 1
fi
echo "$gpus"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DVEDIFF_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" \
      -DVEDIFF_BUILD_EXAMPLES=OFF -DVEDIFF_BUILD_BENCHMARKS=ON > "$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
cmake --build "$build" --target test_cuda_functors test_cuda_backend test_cuda_models test_cuda_parity bench_cuda -j "$(nproc)"
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv
# ctest counts a skipped test (exit code 77) as not failed; on this machine a skip is a failure.
# (test_nccl needs MPI and NCCL and is not built here; ctest would list it as not run.)
(cd "$build" && ctest -L cuda -E "install|test_nccl" --output-on-failure) | tee "$build/ctest_cuda.log"
if grep -qiE '\*\*\*Skipped|Not Run|\(Skipped\)' "$build/ctest_cuda.log"; then
    echo "run_cuda.sh: a cuda test reported itself skipped although nvidia-smi lists a GPU (see $build/ctest_cuda.log)" >&2
    exit 1
fi
"$build/benchmarks/bench_cuda" --mode all
"$build/benchmarks/bench_cuda" --mode all --tf32
python3 "$root/benchmarks/torch_dit_cuda.py" || true
python3 "$root/benchmarks/torch_dit_cuda.py" --tf32 || true
