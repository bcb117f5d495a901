#!/usr/bin/env bash
# Builds the benchmarks (Release, -O3 -march=native) into build-bench if needed and runs them all
# on 2 threads: the machine's FMA peak (the hosts differ between sessions), vediff's GEMM against OpenBLAS, conv2d against PyTorch (oneDNN), and one training
# step of the VE tokenizer (LDM autoencoder + loss + AdamW) and of DiT-S/1, DiT sampling, and the
# FID Inception's feature extraction, against the same models in PyTorch.
#   benchmarks/run.sh            from the repository root (or anywhere)
# Extra: VEDIFF_BENCH_THREADS=N changes the thread count; the OpenBLAS row with its AVX-512
# (SkylakeX) kernels forced is printed too, since OpenBLAS 0.3.21 does not recognize Zen 5
# and picks its AVX2 (Haswell) kernels by default.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-bench"
threads="${VEDIFF_BENCH_THREADS:-2}"

mkdir -p "$build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DVEDIFF_BUILD_TESTS=OFF -DVEDIFF_BUILD_EXAMPLES=OFF \
      -DVEDIFF_BUILD_BENCHMARKS=ON > "$build/configure.log" 2>&1 || { cat "$build/configure.log"; exit 1; }
cmake --build "$build" --target bench_peak bench_gemm bench_conv bench_tokenizer bench_dit bench_inception bench_decode -j2 > "$build/build.log" 2>&1 || { cat "$build/build.log"; exit 1; }

export OMP_NUM_THREADS="$threads"
echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$build/benchmarks/bench_peak" --threads "$threads"
echo "== bench_gemm"
"$build/benchmarks/bench_gemm" --threads "$threads"
echo "== bench_gemm, OpenBLAS with OPENBLAS_CORETYPE=SkylakeX (its AVX-512 kernels)"
OPENBLAS_CORETYPE=SkylakeX "$build/benchmarks/bench_gemm" --threads "$threads"
echo "== bench_conv"
"$build/benchmarks/bench_conv" --threads "$threads"
echo "== bench_tokenizer"
"$build/benchmarks/bench_tokenizer" --threads "$threads"
echo "== bench_dit"
"$build/benchmarks/bench_dit" --threads "$threads"
echo "== bench_inception"
"$build/benchmarks/bench_inception" --threads "$threads"
echo "== bench_decode (streaming JPEG decode + ADM crop to 256 against a PyTorch DataLoader, and the training loop's stall)"
"$build/benchmarks/bench_decode" --workers 2
echo "== bench_tokenizer --recipe (SD's VAE at 256 + LPIPS + PatchGAN; about 10 minutes, 14 GiB)"
env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=SkylakeX "$build/benchmarks/bench_tokenizer" --threads "$threads" --recipe --sequential --warmup 1 --steps 2
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
