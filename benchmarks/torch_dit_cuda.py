"""The PyTorch peer of bench_cuda (issue 9), on the same GPU: the repository's PyTorch DiT
(tests/fixtures/dit_models.py, the model of vediff's DiT parity fixtures) as DiT-B/2 on 4×32×32
latents with 1000 classes, learn_sigma off, in FP32 (TF32 with --tf32), measuring what bench_cuda
measures:
  train   one flow-matching step at batch 256 (t ~ U(0, 1), MSE, label dropout 0.1, backward,
          AdamW lr 1e-4, betas (0.9, 0.95)): images/s, median of STEPS timed steps after 2 warm-up steps
  sample  256 images, 50 Euler steps on linspace(0, 1, 51), classifier-free guidance scale 4: images/s
Usage: torch_dit_cuda.py [--tf32] [--steps S]
Prints `no torch with CUDA` and exits 0 where torch or its CUDA build is missing (Debian's
python3-torch is a CPU build), so benchmarks/run_cuda.sh can always call it."""
import os
import statistics
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
from dit_models import dit, drop_labels  # noqa: E402


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
    tf32 = "--tf32" in sys.argv
    steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 10
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = dit("B", 2, input_size=32, in_channels=4, num_classes=1000, learn_sigma=False).to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)
    batch = 256
    x1 = torch.randn(batch, 4, 32, 32, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)

    def train_step():
        opt.zero_grad(set_to_none=False)
        x0 = torch.randn_like(x1)
        t = torch.rand(batch, device=device)
        tb = t[:, None, None, None]
        y = drop_labels(labels, 1000, 0.1)
        loss = torch.mean((model(tb * x1 + (1 - tb) * x0, t, y) - (x1 - x0)) ** 2)
        loss.backward()
        opt.step()

    per_step = timed(train_step, steps)
    mode = "TF32" if tf32 else "FP32"
    print(f"== torch {torch.__version__}, {torch.cuda.get_device_name(0)}: DiT-B/2 training step, batch {batch}, {mode}: "
          f"{batch / per_step:.1f} images/s")

    model.eval()
    images, euler_steps = 256, 50
    ts = torch.linspace(0, 1, euler_steps + 1, device=device)
    y = torch.randint(0, 1000, (images,), device=device)

    def sample_run():
        with torch.no_grad():
            x = torch.randn(images, 4, 32, 32, device=device)
            for i in range(euler_steps):
                x = x + (ts[i + 1] - ts[i]) * model.forward_with_cfg(x, ts[i].expand(images), y, 4.0)

    per_run = timed(sample_run, 1, warmup=1)
    print(f"== torch: DiT-B/2 sampling, {images} images, {euler_steps} Euler steps, CFG 4, {mode}: {per_run:.1f} s, "
          f"{images / per_run:.1f} images/s")


if __name__ == "__main__":
    main()
