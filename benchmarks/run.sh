#!/usr/bin/env bash
# Builds the benchmarks (Release, -O3 -march=native) into build-bench if needed and runs them all
# on 2 threads: the machine's FMA peak (the hosts differ between sessions), vediff's GEMM against OpenBLAS, conv2d against PyTorch (oneDNN), and one training
# step of the VE tokenizer (LDM autoencoder + loss + AdamW) and of DiT-S/1, DiT sampling, and the
# FID Inception's feature extraction, against the same models in PyTorch.
#   benchmarks/run.sh            from the repository root (or anywhere)
# Extra: VEDIFF_BENCH_THREADS=N changes the thread count.
# Every peer that runs on OpenBLAS (bench_gemm's cblas_sgemm, and PyTorch, whose Debian build
# multiplies fp32 through it) runs with its AVX-512 kernels, OPENBLAS_CORETYPE=SkylakeX, and with
# OPENBLAS_L2_SIZE unset: OpenBLAS 0.3.21 recognizes neither Zen 5 nor Emerald Rapids and falls
# back to AVX2 (Haswell) or SSE3 (Prescott) kernels, and these machines set OPENBLAS_CORETYPE=Haswell
# and a wrong L2 size on Zen 5 hosts, either of which would flatter vediff's ratios.
# VEDIFF_BENCH_OPENBLAS_CORETYPE=<name> picks another.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-bench"
threads="${VEDIFF_BENCH_THREADS:-2}"

mkdir -p "$build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DVEDIFF_BUILD_TESTS=OFF -DVEDIFF_BUILD_EXAMPLES=OFF \
      -DVEDIFF_BUILD_BENCHMARKS=ON > "$build/configure.log" 2>&1 || { cat "$build/configure.log"; exit 1; }
cmake --build "$build" --target bench_peak bench_gemm bench_conv bench_tokenizer bench_dit bench_inception bench_decode -j2 > "$build/build.log" 2>&1 || { cat "$build/build.log"; exit 1; }

export OMP_NUM_THREADS="$threads"
unset OPENBLAS_L2_SIZE
export OPENBLAS_CORETYPE="${VEDIFF_BENCH_OPENBLAS_CORETYPE:-SkylakeX}"
echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== peers: OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE unset (for OpenBLAS and PyTorch)"
"$build/benchmarks/bench_peak" --threads "$threads"
echo "== bench_gemm (fp32, then bf16 operands with fp32 accumulation)"
"$build/benchmarks/bench_gemm" --threads "$threads"
echo "== bench_conv"
"$build/benchmarks/bench_conv" --threads "$threads"
echo "== bench_tokenizer"
"$build/benchmarks/bench_tokenizer" --threads "$threads"
echo "== bench_tokenizer --precision bf16 (convolutions on bf16 operands, against torch.autocast bf16)"
"$build/benchmarks/bench_tokenizer" --threads "$threads" --precision bf16
echo "== bench_dit (fp32, then bf16: vediff --precision bf16 against torch.autocast bf16)"
"$build/benchmarks/bench_dit" --threads "$threads" --precision both
echo "== bench_inception"
"$build/benchmarks/bench_inception" --threads "$threads"
echo "== bench_decode (streaming JPEG decode + ADM crop to 256 against a PyTorch DataLoader, and the training loop's stall)"
"$build/benchmarks/bench_decode" --workers 2
echo "== bench_tokenizer --recipe (SD's VAE at 256 + LPIPS + PatchGAN; about 10 minutes, 14 GiB)"
"$build/benchmarks/bench_tokenizer" --threads "$threads" --recipe --sequential --warmup 1 --steps 2
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
