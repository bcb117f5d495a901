"""The PyTorch side of bench_inception: FID Inception feature extraction (pool3, logits and the
Mixed_6d spatial features, as pytorch-fid computes them: bilinear resize to 299, 2x − 1, the
FID-patched blocks of tests/fixtures/make_inception.py) with random weights, in images per second,
with torch.set_num_threads(threads), under torch.no_grad in eval mode.
Usage: torch_inception.py THREADS REPS BATCH. Prints: inception IMAGES_PER_S."""
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from make_inception import features, fid_inception  # noqa: E402


def main():
    threads, reps, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = fid_inception()
    x = torch.rand(batch, 3, 299, 299)
    times = []
    with torch.no_grad():
        features(net, x)  # warm-up
        for _ in range(reps):
            start = time.perf_counter()
            features(net, x)
            times.append(time.perf_counter() - start)
    print(f"inception {batch / statistics.median(times):.3f}", flush=True)


if __name__ == "__main__":
    main()
