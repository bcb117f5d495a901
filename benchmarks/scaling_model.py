#!/usr/bin/env python3
"""Predicted data-parallel scaling efficiency of DiT training (docs/benchmarks.md).

Per step and GPU: compute t_c = (global batch / N) * training FLOPs per image / achieved FLOP/s;
gradient all-reduce t_ar = 2 (N - 1) / N * gradient bytes / bus bandwidth (ring, as NCCL).
Efficiency without overlap: t_c / (t_c + t_ar). With DDP-style bucket overlap, the all-reduce
hides behind backward (2/3 of t_c) except for the last bucket: exposed = max(t_ar - 2/3 t_c,
last bucket's time). Every number below is an assumption stated in docs/benchmarks.md, not a
measurement. Usage: python3 benchmarks/scaling_model.py
"""

GLOBAL_BATCH = 1024
H100_BF16_PEAK = 989e12            # dense bf16 FLOP/s, H100 SXM
MFU = 0.40                         # achieved fraction of peak assumed for DiT training
NVLINK_BUS = 0.8 * 450e9           # bytes/s: 80% of NVLink 4's 450 GB/s per direction
IB_BUS = 0.8 * min(450e9, 8 * 50e9)  # 8 x 400 Gb/s NICs per 8-GPU node, one ring channel per NIC
BUCKET = 25 * 2**20

MODELS = {
    # parameters, forward FLOPs per 256x256 image (DiT paper's Gflops are multiply-adds: x2)
    "DiT-B/2": (130e6, 2 * 23.0e9),
    "DiT-XL/2": (675e6, 2 * 118.6e9),
}


def predict(params, forward_flops, n, grad_bytes_per_param):
    t_c = (GLOBAL_BATCH / n) * 3 * forward_flops / (H100_BF16_PEAK * MFU)
    bus = NVLINK_BUS if n <= 8 else IB_BUS
    grad_bytes = params * grad_bytes_per_param
    t_ar = 2 * (n - 1) / n * grad_bytes / bus
    last_bucket = 2 * (n - 1) / n * min(BUCKET, grad_bytes) / bus
    exposed = max(t_ar - 2 / 3 * t_c, last_bucket)
    return t_c, t_ar, t_c / (t_c + t_ar), t_c / (t_c + exposed)


print("| model | GPUs | gradients | compute / step | all-reduce | efficiency, no overlap | with overlap |")
print("|---|---|---|---|---|---|---|")
for name, (params, flops) in MODELS.items():
    for n in (8, 32, 64, 256):
        for dtype, size in (("fp32", 4), ("bf16", 2)):
            t_c, t_ar, eff, eff_overlap = predict(params, flops, n, size)
            print(f"| {name} | {n} | {dtype} | {t_c * 1e3:.1f} ms | {t_ar * 1e3:.1f} ms | {100 * eff:.0f}% | {100 * eff_overlap:.0f}% |")
