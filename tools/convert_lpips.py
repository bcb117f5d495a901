"""Converts LPIPS's weights into one safetensors file under the lpips package's state_dict names,
for vediff's models::lpips (forward --model lpips, the tokenizer's perceptual loss): torchvision's
VGG16 (vgg16-397923af.pth, features 0..29) and lpips' linear heads (lpips/weights/v0.1/vgg.pth).
Run with Debian's python3-torch:
    /usr/bin/python3 tools/convert_lpips.py vgg16-397923af.pth vgg.pth lpips.safetensors

VGG16's `features.<i>.weight|bias` (i < 30) become `net.slice<k>.<i>.weight|bias` (slices end at
relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: i in [0, 4), [4, 9), [9, 16), [16, 23), [23, 30));
its classifier is dropped. The heads keep their names (`lin<k>.model.1.weight`, (1, C, 1, 1)).
`scaling_layer.shift` and `.scale` get the package's constants. Names and shapes are checked
against torchvision's vgg16: a missing or mis-shaped tensor is an error naming it. Written as F32
to OUT.tmp and renamed."""
import argparse

import torch
from torchvision.models import vgg16

from converter_io import load_state_dict, safetensors_bytes, write_atomically

SLICES = [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)]
HEAD_CHANNELS = [64, 128, 256, 512, 512]


def converted(vgg_path, heads_path):
    vgg, heads = load_state_dict(vgg_path), load_state_dict(heads_path)
    expected = {name: tuple(t.shape) for name, t in vgg16().state_dict().items() if name.startswith("features.")}
    out, problems = {}, []
    for name, shape in expected.items():
        index = int(name.split(".")[1])
        if index >= 30:
            continue
        if name not in vgg:
            problems.append(f"{vgg_path}: tensor '{name}' {shape} is missing")
            continue
        if tuple(vgg[name].shape) != shape:
            problems.append(f"{vgg_path}: tensor '{name}' has shape {tuple(vgg[name].shape)}, VGG16 needs {shape}")
            continue
        k = next(k for k, (a, b) in enumerate(SLICES, start=1) if a <= index < b)
        out[f"net.slice{k}.{index}.{name.split('.')[2]}"] = vgg[name]
    for k, c in enumerate(HEAD_CHANNELS):
        name = f"lin{k}.model.1.weight"
        if name not in heads:
            problems.append(f"{heads_path}: tensor '{name}' (1, {c}, 1, 1) is missing")
        elif tuple(heads[name].shape) != (1, c, 1, 1):
            problems.append(f"{heads_path}: tensor '{name}' has shape {tuple(heads[name].shape)}, LPIPS needs (1, {c}, 1, 1)")
        else:
            out[name] = heads[name]
    if problems:
        raise SystemExit("; ".join(problems))
    out["scaling_layer.shift"] = torch.tensor([-.030, -.088, -.188])[None, :, None, None]
    out["scaling_layer.scale"] = torch.tensor([.458, .448, .450])[None, :, None, None]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("vgg16", help="torchvision's VGG16 weights (vgg16-397923af.pth)")
    parser.add_argument("heads", help="lpips' linear heads (lpips/weights/v0.1/vgg.pth)")
    parser.add_argument("out", help="the safetensors file to write")
    args = parser.parse_args()
    tensors = converted(args.vgg16, args.heads)
    write_atomically(args.out, safetensors_bytes(tensors, {"format": "pt", "source": "torchvision vgg16 features + lpips v0.1 vgg heads"}))
    print(f"wrote {args.out}: {len(tensors)} tensors, {sum(t.numel() for t in tensors.values())} values")


if __name__ == "__main__":
    main()
