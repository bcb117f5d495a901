"""What the tools/ converters share: reading a PyTorch state_dict file, and writing safetensors
files (Debian ships no `safetensors` package):
an 8-byte little-endian header length N, N bytes of JSON {name: {"dtype", "shape",
"data_offsets"}, "__metadata__": {...}} padded with spaces to a multiple of 8, then the data.
8-byte tensors come first, then 4-byte ones, each group in name order, so every tensor starts
aligned to its element size. The file is written to OUT.tmp and renamed, so a reader never sees
half a file."""
import json
import os
import struct

import numpy as np
import torch


def load_state_dict(path):
    """The dict of tensors in a torch.save file (or under its "state_dict" key); exits naming the file otherwise."""
    try:
        obj = torch.load(path, map_location="cpu")
    except OSError as e:
        raise SystemExit(f"{path}: cannot read: {e.strerror or e}")
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise SystemExit(f"{path}: not a state_dict (a dict of tensors); got {type(obj).__name__}")
    return obj


def safetensors_bytes(tensors, metadata, int64_names=()):
    """tensors: {name: torch tensor}; F32, except the names in int64_names (I64)."""
    arrays = {}
    for name, t in tensors.items():
        a = t.detach().cpu().numpy()
        arrays[name] = a.astype("<i8") if name in int64_names else a.astype("<f4")
    header, blobs, offset = {}, [], 0
    for name in sorted(arrays, key=lambda n: (-arrays[n].dtype.itemsize, n)):
        raw = np.ascontiguousarray(arrays[name]).tobytes()
        dtype = "I64" if arrays[name].dtype.kind == "i" else "F32"
        header[name] = {"dtype": dtype, "shape": list(arrays[name].shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def write_atomically(path, data):
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
