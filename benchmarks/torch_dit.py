"""The PyTorch side of the DiT benchmark, on the DiT of tests/fixtures/dit_models.py (the model
vediff's DiT parity fixtures come from): DiT-S/1 on 8×8×4 latents with 10 classes (hidden 384,
depth 12, 6 heads, patch 1, 64 tokens, learn_sigma off), in one of two modes:

  train   one flow-matching training step: x0 ~ N(0, I) noise, x1 the (fixed, random) data batch,
          t ~ U(0, 1) per sample, x_t = t·x1 + (1 − t)·x0, target x1 − x0, MSE (mean over all
          elements); labels dropped to the null class with probability 0.1; backward; AdamW
          (lr 1e-4, betas (0.9, 0.95), weight decay 0).
  sample  one sampling run under torch.no_grad(): IMAGES latents from N(0, I), STEPS Euler steps on
          linspace(0, 1, STEPS + 1), classifier-free guidance with scale CFG on every channel (the
          batch doubled with null labels, v = v_u + s·(v_c − v_u)).

Usage: torch_dit.py train THREADS BATCH [bf16]
       torch_dit.py sample THREADS IMAGES STEPS CFG [bf16]
With bf16 last, the forward passes run under torch.autocast("cpu", dtype=torch.bfloat16) (oneDNN's
bf16 matrix products; weights, optimizer and loss fp32), the peer of vediff's --precision bf16.
It builds the model, prints `rss_baseline_kib` (ru_maxrss after importing torch, before the model
is built), `parameters` (trainable scalars; pos_embed excluded) and `ready`, then serves commands
from stdin, one a line, so that the C++ benchmark can interleave its steps with vediff's:
  w   a warm-up step; s   a timed step. train prints `step_ms T loss L` per step, sample prints
      `step_ms T images_per_s R` per sampling run (one "step" is the whole run of STEPS Euler steps);
  q   prints median_step_ms (over the timed steps), samples_per_s (train: BATCH / median step;
      sample: IMAGES / median run), faults_per_step (minor page faults per timed step),
      peak_rss_kib (ru_maxrss), vm_hwm_kib (/proc/self/status VmHWM, the kernel's own peak) and
      `end`, and exits.
By hand: printf 'w\ns\ns\ns\nq\n' | /usr/bin/python3 torch_dit.py train 2 64
         printf 's\nq\n' | /usr/bin/python3 torch_dit.py sample 2 64 50 4"""
import os
import resource
import statistics
import sys
import time

import torch

# The repository's PyTorch DiT, the model the DiT parity fixtures come from.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from dit_models import dit, drop_labels  # noqa: E402

INPUT_SIZE, IN_CHANNELS, NUM_CLASSES = 8, 4, 10


def max_rss_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def vm_hwm_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def autocast(bf16):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


def make_train_step(model, batch, bf16=False):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95),
                            weight_decay=0.0)
    x1 = torch.randn(batch, IN_CHANNELS, INPUT_SIZE, INPUT_SIZE)
    labels = torch.randint(0, NUM_CLASSES, (batch,))

    def step():
        opt.zero_grad(set_to_none=False)
        x0 = torch.randn_like(x1)
        t = torch.rand(batch)
        tb = t[:, None, None, None]
        xt = tb * x1 + (1 - tb) * x0
        y = drop_labels(labels, NUM_CLASSES, 0.1)
        with autocast(bf16):
            v = model(xt, t, y)
        loss = torch.mean((v.float() - (x1 - x0)) ** 2)
        loss.backward()
        opt.step()
        return f"loss {loss.item():.6g}"

    return step, batch


def make_sample_run(model, images, steps, cfg, bf16=False):
    model.eval()
    labels = torch.randint(0, NUM_CLASSES, (images,))
    ts = torch.linspace(0, 1, steps + 1)

    def run():
        start = time.perf_counter()
        with torch.no_grad():
            x = torch.randn(images, IN_CHANNELS, INPUT_SIZE, INPUT_SIZE)
            for i in range(steps):
                with autocast(bf16):
                    v = model.forward_with_cfg(x, ts[i].expand(images), labels, cfg)
                x = x + (ts[i + 1] - ts[i]) * v.float()
        return f"images_per_s {images / (time.perf_counter() - start):.3f}"

    return run, images


def main():
    mode, threads = sys.argv[1], int(sys.argv[2])
    if mode not in ("train", "sample"):
        sys.exit(f"unknown mode '{mode}' (train or sample)")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    print(f"rss_baseline_kib {max_rss_kib()}", flush=True)

    model = dit("S", 1, input_size=INPUT_SIZE, in_channels=IN_CHANNELS, num_classes=NUM_CLASSES, learn_sigma=False)
    bf16 = sys.argv[-1] == "bf16"
    if mode == "train":
        step, per_step = make_train_step(model, int(sys.argv[3]), bf16)
    else:
        step, per_step = make_sample_run(model, int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), bf16)
    print(f"parameters {sum(p.numel() for p in model.parameters() if p.requires_grad)}", flush=True)

    print("ready", flush=True)
    faults_before, times = None, []
    for line in sys.stdin:
        command = line.strip()
        if command in ("w", "s"):
            if command == "s" and faults_before is None:
                faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            info = step()
            elapsed = time.perf_counter() - start
            if command == "s":
                times.append(elapsed)
            print(f"step_ms {1000 * elapsed:.3f} {info}", flush=True)
        elif command == "q":
            break
    if times:
        median = statistics.median(times)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
        print(f"median_step_ms {1000 * median:.3f}", flush=True)
        print(f"samples_per_s {per_step / median:.3f}", flush=True)
        print(f"faults_per_step {faults / len(times):.0f}", flush=True)
    print(f"peak_rss_kib {max_rss_kib()}", flush=True)
    print(f"vm_hwm_kib {vm_hwm_kib()}", flush=True)
    print("end", flush=True)


if __name__ == "__main__":
    main()
