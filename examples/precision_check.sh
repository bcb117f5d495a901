#!/usr/bin/env bash
# The quality check of bf16_mixed (docs/results.md, "Mixed precision"): the quick experiment's KL
# tokenizer and LightningDiT (include/vediff/jobs/experiment_preset.hpp, preset quick), the DiT
# trained in fp32 with three seeds and in bf16 with two, every DiT sampled the same way (25 Euler
# steps, CFG 4, 100 per class, sampling seed 0), and the fp32 seed-0 DiT sampled in bf16 too; then
# gFD of every sample set against 5,000 test images (the Fashion-MNIST classifier's features).
#   examples/precision_check.sh            writes runs/precision_check/ (OUT=... to change)
# Needs build/ (./vediff.sh test); trains the classifier first when runs/classifier/classifier.safetensors
# is missing. About 30 minutes on 2 cores. TOKENIZER_STEPS=N trains the tokenizer for N steps
# instead of the preset's 500 (the check is of the DiT's precision, not of the tokenizer);
# RUNS="fp32:0 fp32:1 bf16:0" trains fewer DiTs (precision:seed).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
VEDIFF=${VEDIFF:-build/examples/vediff}
OUT=${OUT:-runs/precision_check}
CLASSIFIER=${CLASSIFIER:-runs/classifier/classifier.safetensors}
mkdir -p "$OUT"
[[ -f $CLASSIFIER ]] || "$VEDIFF" classifier --out "$(dirname "$CLASSIFIER")"
[[ -d $OUT/tokenizer/checkpoint ]] ||
    "$VEDIFF" train-tokenizer --loss kl --kl-weight 1e-6 --ch 32 --ch-mult 1,2,2 --norm-groups 8 --z-channels 4 \
        --steps "${TOKENIZER_STEPS:-500}" --batch 32 --warmup 50 --eval-images 2000 --out "$OUT/tokenizer"
[[ -f $OUT/latents.safetensors ]] || "$VEDIFF" encode --tokenizer "$OUT/tokenizer" --max-images 20000 --out "$OUT/latents.safetensors"
dit=(--latents "$OUT/latents.safetensors" --design lightningdit --hidden 192 --depth 4 --heads 3 --patch 2 --steps 600 --batch 128
     --warmup 100 --lr 1e-3 --ema 0.995)
samples=()
for run in ${RUNS:-fp32:0 fp32:1 fp32:2 bf16:0 bf16:1}; do
    precision=${run%:*} seed=${run#*:}
    name=dit_${precision}_seed${seed}
    [[ -f $OUT/$name/train.json ]] || "$VEDIFF" train-dit "${dit[@]}" --precision "$precision" --seed "$seed" --out "$OUT/$name"
    [[ -f $OUT/samples_$name/metrics.json ]] ||
        "$VEDIFF" sample --dit "$OUT/$name" --precision "$precision" --sampler euler --steps 25 --cfg 4 --per-class 100 --batch 250 \
            --seed 0 --classifier "$CLASSIFIER" --out "$OUT/samples_$name"
    samples+=(--samples "$OUT/samples_$name")
done
# Sampling alone in bf16, from the fp32 model of seed 0.
[[ -f $OUT/samples_dit_fp32_seed0_sampled_bf16/metrics.json ]] ||
    "$VEDIFF" sample --dit "$OUT/dit_fp32_seed0" --precision bf16 --sampler euler --steps 25 --cfg 4 --per-class 100 --batch 250 \
        --seed 0 --classifier "$CLASSIFIER" --out "$OUT/samples_dit_fp32_seed0_sampled_bf16"
samples+=(--samples "$OUT/samples_dit_fp32_seed0_sampled_bf16")
"$VEDIFF" eval "${samples[@]}" --classifier "$CLASSIFIER" --eval-images 5000 --fd-bootstrap 20 --out "$OUT/eval"
