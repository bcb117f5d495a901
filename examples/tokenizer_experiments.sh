#!/usr/bin/env bash
# The tokenizer experiments of docs/results.md, each run exactly as recorded there.
#   examples/tokenizer_experiments.sh table     KL(beta 1e-6) vs VE, 2000 steps, whole test set (~2 x 14 min)
#   examples/tokenizer_experiments.sh sweeps    lambda1, beta and lr sweeps, 800 steps each (~7 x 5.5 min)
#   examples/tokenizer_experiments.sh summary   one line per finished run under runs/experiments
# Runs use 2 threads (OMP_NUM_THREADS=2): a run is deterministic for a given thread count, so the
# numbers repeat exactly on the same thread count. VEDIFF=path/to/vediff overrides the program.
set -euo pipefail
cd "$(dirname "$0")/.."
VEDIFF=${VEDIFF:-build/examples/vediff}
OUT=${OUT:-runs/experiments}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

run() {  # name, flags...
    local name=$1
    shift
    echo "== $name: $VEDIFF train-tokenizer $* --out $OUT/$name"
    "$VEDIFF" train-tokenizer "$@" --out "$OUT/$name"
}

field() {  # metrics.json, key -> the number after "key":
    sed -n "s/^  \"$2\": \([-0-9.eE+]*\),\{0,1\}$/\1/p" "$1" | head -1
}

summary() {
    printf '%-22s %8s %10s %8s %8s %8s %9s\n' run steps sigma2 psnr psnr_z ssim train_s
    for m in "$OUT"/*/metrics.json; do
        [[ -f $m ]] || continue
        printf '%-22s %8s %10.4g %8.2f %8.2f %8.4f %9.0f\n' "$(basename "$(dirname "$m")")" \
            "$(field "$m" steps)" "$(field "$m" sigma2_mean)" "$(field "$m" psnr)" \
            "$(field "$m" psnr_sampled)" "$(field "$m" ssim)" "$(field "$m" train_seconds)"
    done
}

[[ -x $VEDIFF || ${1:-} == summary ]] || { echo "no $VEDIFF: build first (./vediff.sh test)" >&2; exit 1; }

case "${1:-}" in
table)
    run table_kl_1e-6 --loss kl --kl-weight 1e-6 --steps 2000
    run table_ve --loss ve --steps 2000
    summary
    ;;
sweeps)
    short=(--steps 800 --eval-images 2000)
    for l in 0.01 0.1 1; do run "sweep_ve_lambda1_$l" --loss ve --ve-weight "$l" "${short[@]}"; done
    for b in 1e-6 1e-2 1; do run "sweep_kl_beta_$b" --loss kl --kl-weight "$b" "${short[@]}"; done
    run sweep_ve_lr_1e-4 --loss ve --lr 1e-4 "${short[@]}"
    summary
    ;;
summary) summary ;;
*) sed -n '2,7p' "$0"; exit 2 ;;
esac
