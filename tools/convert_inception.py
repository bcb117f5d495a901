"""Converts pytorch-fid's FID Inception weights (pt_inception-2015-12-05-6726825d.pth, a plain
state_dict saved with torch.save) to safetensors under the same names, for vediff's
models::fid_inception_v3 (forward --model inception, the evaluate job). Run with Debian's
python3-torch:
    /usr/bin/python3 tools/convert_inception.py pt_inception-2015-12-05-6726825d.pth inception.safetensors

The names and shapes are checked against torchvision's Inception3(num_classes=1008,
aux_logits=False), whose state_dict pytorch-fid's FID model shares (its FID blocks change the
forward only): a missing, extra or mis-shaped tensor is an error naming it. A BatchNorm without
num_batches_tracked (files saved before PyTorch 0.4.1) gets 0, as PyTorch's own loader gives it;
evaluation never reads it. Floating tensors are written as F32, num_batches_tracked as I64. The
output is written to OUT.tmp and renamed, so a reader never sees half a file."""
import argparse
import sys

import torch
from torchvision.models.inception import Inception3

from converter_io import load_state_dict, safetensors_bytes, write_atomically


def expected_shapes():
    net = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    return {name: tuple(t.shape) for name, t in net.state_dict().items()}


def checked(state, expected, path):
    problems, added = [], []
    state = dict(state)
    for name, shape in expected.items():
        if name not in state:
            if name.endswith("num_batches_tracked"):
                state[name] = torch.tensor(0, dtype=torch.int64)
                added.append(name)
                continue
            problems.append(f"tensor '{name}' {shape} is missing")
        elif tuple(state[name].shape) != shape:
            problems.append(f"tensor '{name}' has shape {tuple(state[name].shape)}, the FID Inception needs {shape}")
    extra = [name for name in state if name not in expected]
    if extra:
        problems.append("unexpected tensors (not in the FID Inception): " + ", ".join(f"'{n}'" for n in extra))
    if problems:
        raise SystemExit(f"{path}: " + "; ".join(problems))
    if added:
        print(f"note: {len(added)} BatchNorm layers had no num_batches_tracked; written as 0", file=sys.stderr)
    return {name: state[name] for name in expected}  # the model's order


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pth", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or a state_dict like it)")
    parser.add_argument("out", help="the safetensors file to write")
    args = parser.parse_args()
    state = checked(load_state_dict(args.pth), expected_shapes(), args.pth)
    write_atomically(args.out, safetensors_bytes(state, {"format": "pt", "source": "pytorch-fid FID Inception (pt_inception-2015-12-05)"},
                                                 int64_names={n for n in state if n.endswith("num_batches_tracked")}))
    print(f"wrote {args.out}: {len(state)} tensors, {sum(t.numel() for t in state.values())} values")


if __name__ == "__main__":
    main()
