#!/usr/bin/env bash
# The GPU checks of the cuda backend (issue 9), in one go, for a machine with a GPU:
# configures and builds the cuda tests and benchmarks into build-cuda (Release, nvcc from
# /usr/local/cuda), runs the cuda tests (ctest -L cuda: device parity, the models, the allocator)
# then bench_cuda in FP32 and in TF32, and the PyTorch peer (torch_dit_cuda.py) where this machine
# has a torch with CUDA (Debian's python3-torch has none: the script then says so).
#   benchmarks/run_cuda.sh            from the repository root (or anywhere)
# Extra: CUDA_ARCHITECTURES=80 (say) for a GPU other than Hopper (default 90).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-cuda"
arch="${CUDA_ARCHITECTURES:-90}"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DVEDIFF_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" \
      -DVEDIFF_BUILD_EXAMPLES=OFF -DVEDIFF_BUILD_BENCHMARKS=ON > "$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
cmake --build "$build" --target test_cuda_functors test_cuda_backend test_cuda_models test_cuda_parity bench_cuda -j "$(nproc)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
(cd "$build" && ctest -L cuda -E install --output-on-failure)
"$build/benchmarks/bench_cuda" --mode all
"$build/benchmarks/bench_cuda" --mode all --tf32
python3 "$root/benchmarks/torch_dit_cuda.py" || true
python3 "$root/benchmarks/torch_dit_cuda.py" --tf32 || true
