"""The PyTorch side of bench_conv: conv2d forward and forward+backward (dx, dweight, dbias)
throughput on the CPU with torch.set_num_threads(threads); Debian's torch runs conv through
oneDNN (mkldnn). Usage: torch_conv.py THREADS REPS CASE...; CASE is N:Cin:Cout:H:W:k:stride:pad.
Prints one line per case: CASE fwd_images_per_s fwd_bwd_images_per_s."""
import statistics
import sys
import time

import torch


def median_seconds(fn, reps, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    threads, reps = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    for case in sys.argv[3:]:
        n, cin, cout, h, w, k, stride, pad = (int(v) for v in case.split(":"))
        conv = torch.nn.Conv2d(cin, cout, k, stride=stride, padding=pad)
        x = torch.randn(n, cin, h, w, requires_grad=True)
        with torch.no_grad():
            dy = torch.randn_like(conv(x))

        def forward():
            with torch.no_grad():
                conv(x)

        def forward_backward():
            x.grad = None
            conv.zero_grad(set_to_none=False)
            conv(x).backward(dy)

        fwd = median_seconds(forward, reps)
        both = median_seconds(forward_backward, reps)
        print(f"{case} {n / fwd:.1f} {n / both:.1f}", flush=True)


if __name__ == "__main__":
    main()
