"""The PyTorch peer of bench_cuda (issue 9), on the same GPU: the repository's PyTorch DiT
(tests/fixtures/dit_models.py, the model of vediff's DiT parity fixtures) as DiT-B/2 on 4×32×32
latents with 1000 classes, learn_sigma off, in FP32 (TF32 with --tf32, bf16 under
torch.autocast("cuda", bfloat16) with --bf16: the peer of bench_cuda --precision bf16), measuring
what bench_cuda measures:
  train   one flow-matching step at batch 256 (t ~ U(0, 1), MSE, label dropout 0.1, backward,
          AdamW lr 1e-4, betas (0.9, 0.95)): images/s, median of STEPS timed steps after 2 warm-up steps
  sample  256 images, 50 Euler steps on linspace(0, 1, 51), classifier-free guidance scale 4: images/s
Each is also given in TFLOP/s of the matrix products (bench_cuda's count) and as a fraction of the
GPU's dense peak for the run's arithmetic (FP32 CUDA cores, TF32 or bf16 tensor cores), from the
same table as benchmarks/cuda/gpu_peak.hpp: SMs × max SM clock (nvidia-smi) × dense FLOPs per clock
per SM; --peak-tflops X replaces it. Each measurement also prints a line
`RESULT library=torch bench=... precision=... key=value ...` as bench_cuda does.
Usage: torch_dit_cuda.py [--tf32] [--bf16] [--steps S] [--peak-tflops X]
Prints `no torch with CUDA` and exits 0 where torch or its CUDA build is missing (Debian's
python3-torch is a CPU build), so benchmarks/run_cuda.sh can always call it."""
import argparse
import os
import statistics
import subprocess
import sys
import time

try:
    import torch
except ImportError:
    print("torch_dit_cuda: no torch with CUDA on this machine: peer not measured")
    sys.exit(0)
if not torch.cuda.is_available():
    print("torch_dit_cuda: no torch with CUDA on this machine: peer not measured")
    sys.exit(0)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from dit_models import CONFIGS, dit, drop_labels  # noqa: E402

IN_CHANNELS, INPUT_SIZE, PATCH_SIZE, NUM_CLASSES = 4, 32, 2, 1000

# Dense FLOPs per clock per SM by compute capability: gpu_peak.hpp's table (which documents the
# datasheet figures behind it); what it leaves unknown is left out here too.
DENSE_FLOPS_PER_CLOCK_PER_SM = {
    "fp32": {(7, 0): 128, (8, 0): 128, (8, 6): 256, (8, 9): 256, (9, 0): 256},
    "tf32": {(8, 0): 1024, (9, 0): 2048},
    "bf16": {(8, 0): 2048, (9, 0): 4096},
}

PEAK_NAMES = {"fp32": "FP32", "tf32": "TF32", "bf16": "bf16"}  # as bench_cuda names them


def forward_flops_per_sample(depth, hidden, tokens, patch, in_channels, out_channels):
    """bench_cuda's count: matrix products of one forward per sample (linear layers per token,
    attention's q·kᵀ and p·v, the per-sample conditioning MLPs); a multiply-add is 2 FLOPs."""
    d, n, p2 = float(hidden), float(tokens), float(patch * patch)
    per_token = depth * 12 * d * d + p2 * in_channels * d + d * p2 * out_channels
    attention = depth * 2 * n * d
    per_sample = depth * 6 * d * d + 2 * d * d + 256 * d + d * d
    return 2 * (n * (per_token + attention) + per_sample)


def max_sm_clock_mhz():
    """The first GPU's maximum SM clock from nvidia-smi (the clock bench_cuda reads from the
    driver), or None."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return float(out.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def dense_peak_tflops(precision, override):
    """(peak TFLOP/s or None, how it was found)."""
    if override:
        return override, "--peak-tflops"
    props = torch.cuda.get_device_properties(0)
    per_sm = DENSE_FLOPS_PER_CLOCK_PER_SM[precision].get((props.major, props.minor))
    if per_sm is None:
        return None, f"peak unknown for sm_{props.major}{props.minor} ({precision}); pass --peak-tflops"
    clock = max_sm_clock_mhz()
    if clock is None:
        return None, "no max SM clock from nvidia-smi; pass --peak-tflops"
    return per_sm * props.multi_processor_count * clock * 1e-6, f"{props.multi_processor_count} SMs at {clock:.0f} MHz"


def report(bench, precision, images_per_s, tflops, peak, peak_source):
    if peak:
        fraction = f"{100 * tflops / peak:.1f}% of the dense {PEAK_NAMES[precision]} peak, {peak:.1f} TFLOP/s ({peak_source})"
        fields = f"peak_tflops={peak:.1f} peak_fraction={tflops / peak:.4f}"
    else:
        fraction, fields = peak_source, "peak_tflops=unknown peak_fraction=unknown"
    print(f"   {tflops:.1f} TFLOP/s (matrix products), {fraction}")
    print(f"RESULT library=torch bench={bench} precision={precision} images_per_s={images_per_s:.2f} tflops={tflops:.2f} {fields}",
          flush=True)


def timed(f, steps, warmup=2):
    for _ in range(warmup):
        f()
    times = []
    for _ in range(steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        f()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description="PyTorch peer of bench_cuda: DiT-B/2 training step and sampling")
    parser.add_argument("--tf32", action="store_true", help="TF32 matrix products (torch.backends.*.allow_tf32)")
    parser.add_argument("--bf16", action="store_true", help='forward passes under torch.autocast("cuda", bfloat16)')
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="the dense peak to compare with, TFLOP/s")
    args = parser.parse_args()
    precision = "bf16" if args.bf16 else "tf32" if args.tf32 else "fp32"
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    peak, peak_source = dense_peak_tflops(precision, args.peak_tflops)

    torch.manual_seed(0)
    device = torch.device("cuda")
    model = dit("B", PATCH_SIZE, input_size=INPUT_SIZE, in_channels=IN_CHANNELS, num_classes=NUM_CLASSES,
                learn_sigma=False).to(device)
    config = CONFIGS["B"]
    forward_flops = forward_flops_per_sample(config["depth"], config["hidden_size"], (INPUT_SIZE // PATCH_SIZE) ** 2,
                                             PATCH_SIZE, IN_CHANNELS, IN_CHANNELS)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)
    batch = 256
    x1 = torch.randn(batch, IN_CHANNELS, INPUT_SIZE, INPUT_SIZE, device=device)
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.bf16)

    def train_step():
        opt.zero_grad(set_to_none=False)
        x0 = torch.randn_like(x1)
        t = torch.rand(batch, device=device)
        tb = t[:, None, None, None]
        y = drop_labels(labels, NUM_CLASSES, 0.1)
        with autocast():
            v = model(tb * x1 + (1 - tb) * x0, t, y)
        loss = torch.mean((v.float() - (x1 - x0)) ** 2)
        loss.backward()
        opt.step()

    per_step = timed(train_step, args.steps)
    print(f"== torch {torch.__version__}, {torch.cuda.get_device_name(0)}: DiT-B/2 training step, batch {batch}, {precision}: "
          f"{batch / per_step:.1f} images/s")
    report("train", precision, batch / per_step, 3 * forward_flops * batch / per_step * 1e-12, peak, peak_source)

    model.eval()
    images, euler_steps = 256, 50
    ts = torch.linspace(0, 1, euler_steps + 1, device=device)
    y = torch.randint(0, NUM_CLASSES, (images,), device=device)

    def sample_run():
        with torch.no_grad():
            x = torch.randn(images, IN_CHANNELS, INPUT_SIZE, INPUT_SIZE, device=device)
            for i in range(euler_steps):
                with autocast():
                    v = model.forward_with_cfg(x, ts[i].expand(images), y, 4.0)
                x = x + (ts[i + 1] - ts[i]) * v.float()

    per_run = timed(sample_run, 1, warmup=1)
    print(f"== torch: DiT-B/2 sampling, {images} images, {euler_steps} Euler steps, CFG 4, {precision}: {per_run:.1f} s, "
          f"{images / per_run:.1f} images/s")
    # Guidance doubles the batch: 2 forwards per image and step.
    report("sample", precision, images / per_run, 2 * euler_steps * forward_flops * images / per_run * 1e-12, peak, peak_source)


if __name__ == "__main__":
    main()
