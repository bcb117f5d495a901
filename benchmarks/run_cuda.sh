#!/usr/bin/env bash
# The GPU checks of the cuda backend (issue 9), in one go, for a machine with a GPU:
# configures and builds the cuda tests and benchmarks into build-cuda (Release, nvcc from
# /usr/local/cuda), runs the cuda tests (ctest -L cuda: device parity, the models, the allocator)
# then, for each of FP32, TF32 and bf16, bench_cuda and right after it the PyTorch peer
# (torch_dit_cuda.py) where this machine has a torch with CUDA (Debian's python3-torch has none:
# the script then says so and keeps vediff's numbers), and ends with a table of both from their
# `RESULT` lines (build-cuda/results.txt): images/s, vediff/torch, fraction of the dense peak.
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

# bench_cuda and the peer take turns on the GPU, precision by precision; a failing bench_cuda stops
# the script (pipefail), a failing or absent peer does not.
results="$build/results.txt"
: > "$results"
for precision in fp32 tf32 bf16; do
    case "$precision" in
        fp32) vediff_flags=() torch_flags=() ;;
        tf32) vediff_flags=(--tf32) torch_flags=(--tf32) ;;
        bf16) vediff_flags=(--precision bf16) torch_flags=(--bf16) ;;
    esac
    echo "==== $precision: bench_cuda --mode all ${vediff_flags[*]}, then torch_dit_cuda.py ${torch_flags[*]}"
    "$build/benchmarks/bench_cuda" --mode all "${vediff_flags[@]}" | tee -a "$results"
    python3 "$root/benchmarks/torch_dit_cuda.py" "${torch_flags[@]}" 2>&1 | tee -a "$results" ||
        echo "run_cuda.sh: torch_dit_cuda.py failed ($precision); vediff's numbers stand alone" | tee -a "$results"
done

# The comparison: the RESULT lines as key=value fields, one row per model step and precision.
awk '
    /^RESULT / {
        delete f
        for (i = 2; i <= NF; ++i) { split($i, kv, "="); f[kv[1]] = kv[2] }
        key = f["library"] SUBSEP f["bench"] SUBSEP f["precision"]
        rate[key] = f["images_per_s"]; tflops[key] = f["tflops"]; fraction[key] = f["peak_fraction"]
        if (f["library"] == "torch") torch_ran = 1
        any_result = 1
    }
    function get(table, k) { return (k in table) ? table[k] : "" }  # without adding the key
    function percent(x) { return (x == "" || x == "unknown") ? "?" : sprintf("%.1f%%", 100 * x) }
    function row(c1, c2, c3, c4, c5, c6, c7) { printf "%-10s %-6s %12s %12s %14s %12s %12s\n", c1, c2, c3, c4, c5, c6, c7 }
    END {
        print ""
        if (!any_result) { print "run_cuda.sh: no RESULT lines: nothing measured"; exit 1 }
        print "==== vediff against PyTorch eager on this GPU (images/s; % of the dense peak of the precision: FP32 CUDA cores, TF32 or bf16 tensor cores)"
        row("step", "prec.", "vediff", "torch", "vediff/torch", "vediff peak", "torch peak")
        split("train sample tokenizer", benches, " "); split("fp32 tf32 bf16", precisions, " ")
        for (b = 1; b <= 3; ++b) for (p = 1; p <= 3; ++p) {
            ours = "vediff" SUBSEP benches[b] SUBSEP precisions[p]; theirs = "torch" SUBSEP benches[b] SUBSEP precisions[p]
            if (!(ours in rate)) continue
            measured = (theirs in rate) && get(rate, theirs) > 0
            row(benches[b], precisions[p], rate[ours], measured ? rate[theirs] : "n/a", measured ? sprintf("%.2fx", rate[ours] / rate[theirs]) : "n/a",
                percent(get(fraction, ours)), measured ? percent(get(fraction, theirs)) : "n/a")
        }
        row("GEMM n", "prec.", "vediff TF/s", "cuBLAS TF/s", "vediff/cuBLAS", "vediff peak", "cuBLAS peak")
        for (p = 1; p <= 3; ++p) {
            ours = "vediff" SUBSEP "gemm_n8192" SUBSEP precisions[p]; theirs = "cublas" SUBSEP "gemm_n8192" SUBSEP precisions[p]
            if (!(ours in tflops) || !(theirs in tflops)) continue
            row(8192, precisions[p], tflops[ours], tflops[theirs], sprintf("%.2fx", tflops[ours] / tflops[theirs]),
                percent(get(fraction, ours)), percent(get(fraction, theirs)))
        }
        if (!torch_ran) print "torch: not measured (no torch with CUDA here); the vediff numbers stand alone"
        ours = "vediff" SUBSEP "train" SUBSEP "tf32"; theirs = "torch" SUBSEP "train" SUBSEP "tf32"
        if (ours in rate) {
            print "targets (DiT-B/2 training step, TF32):"
            if (theirs in rate)
                printf "  >= 1.0x PyTorch eager fp32 with TF32 matmul: %.2fx, %s\n", rate[ours] / rate[theirs],
                       (rate[ours] + 0 >= rate[theirs] + 0) ? "met" : "not met"
            else print "  >= 1.0x PyTorch eager fp32 with TF32 matmul: not measured (no torch peer)"
            x = get(fraction, ours)
            if (x == "" || x == "unknown") print "  >= 40% of the dense TF32 peak: peak unknown for this GPU (bench_cuda --peak-tflops)"
            else printf "  >= 40%% of the dense TF32 peak: %.1f%%, %s\n", 100 * x, (x + 0 >= 0.4) ? "met" : "not met"
        }
    }' "$results"

# The two attention paths on the training step (TF32): above the automatic choice (cuBLAS for
# DiT-B/2's 0.8 GiB of probabilities per layer), here the fused kernels.
echo "==== the DiT-B/2 training step with the fused attention kernels, TF32, for comparison with the row above"
"$build/benchmarks/bench_cuda" --mode train --tf32 --attention fused | grep -v '^RESULT '
