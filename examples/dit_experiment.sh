#!/usr/bin/env bash
# The generator experiment of docs/results.md: a class-conditional LightningDiT trained for 20
# minutes on the latents of the VE tokenizer of the issue-3 table, sampled 100 per class, and
# judged by the Fashion-MNIST classifier.
#   examples/dit_experiment.sh [TOKENIZER_DIR]     (default runs/experiments/table_ve)
# Needs build/ (./vediff.sh test) and the tokenizer (examples/tokenizer_experiments.sh table);
# trains the classifier first when runs/classifier/classifier.safetensors is missing.
# Runs use 2 threads; every step is deterministic for a given thread count, but the number of
# training steps that fit in the 20-minute budget depends on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
TOKENIZER=${1:-runs/experiments/table_ve}
OUT=${OUT:-runs/dit_experiment}
mkdir -p "$OUT"
[[ -f runs/classifier/classifier.safetensors ]] || build/examples/vediff classifier --out runs/classifier
build/examples/vediff encode --tokenizer "$TOKENIZER" --out "$OUT/latents.safetensors"
build/examples/vediff train-dit --latents "$OUT/latents.safetensors" --out "$OUT/dit" --time-budget 1200
build/examples/vediff sample --dit "$OUT/dit" --per-class 100 --sampler euler --steps 50 --cfg 4 --seed 0 --out "$OUT/samples"
