"""Loads a tokenizer that `vediff export --naming ldm` wrote into the PyTorch LDM AutoencoderKL
(tests/fixtures/ldm_autoencoder.py, the reference module of vediff's parity fixtures) with
load_state_dict(strict=True), and prints the reconstruction of a random image, so that a user can
see the file works in PyTorch. Run with Debian's python3-torch:
    /usr/bin/python3 tools/check_export.py EXPORTED.safetensors RUN_DIR
RUN_DIR is the train-tokenizer output the export came from (its sizes are read from
RUN_DIR/metrics.json's "config"); a missing, unexpected or mis-shaped tensor fails with PyTorch's
own message."""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from ldm_autoencoder import AutoencoderKL  # noqa: E402
from fixture_io import check_safetensors_layout, read_safetensors  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    weights, run = sys.argv[1], sys.argv[2]
    with open(os.path.join(run, "metrics.json")) as f:
        m = json.load(f)["config"]["model"]
    cfg = dict(in_channels=m["in_channels"], out_channels=m["out_channels"], ch=m["ch"], ch_mult=tuple(m["ch_mult"]),
               num_res_blocks=m["num_res_blocks"], z_channels=m["z_channels"], embed_dim=m["embed_dim"],
               resolution=m["resolution"], attn_resolutions=m["attn_resolutions"], groups=m["norm_groups"])
    metadata = check_safetensors_layout(weights)
    model = AutoencoderKL(cfg).double()
    result = model.load_state_dict(read_safetensors(weights), strict=True)
    x = torch.rand(1, cfg["in_channels"], cfg["resolution"], cfg["resolution"], dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        mean = torch.chunk(model.encode(x), 2, dim=1)[0]
        x_hat = model.decode(mean)
    print(f"{weights}: safetensors layout and string metadata as the safetensors package demands "
          f"({len(metadata)} metadata keys, vediff.xxh3_64 {'present' if 'vediff.xxh3_64' in metadata else 'absent'}); "
          f"load_state_dict(strict=True): {result}; reconstruction of a random image: "
          f"mean |x - x_hat| {float((x - x_hat).abs().mean()):.4f}")


if __name__ == "__main__":
    main()
