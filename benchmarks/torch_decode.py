"""The PyTorch side of bench_decode: the field's ImageNet input pipeline (PIL decode, convert to RGB,
ADM's center_crop_arr, scale to [-1, 1], a torch DataLoader with worker processes), over the
benchmark's JPEG folder. Usage: torch_decode.py FOLDER SIZE WORKERS BATCH BATCHES.
Prints "per_image_ms MS" (decode + crop on this process, one image at a time) and
"images_per_s N" (the DataLoader, after its first batch)."""
import os
import sys
import time

import numpy as np
import torch
from PIL import Image


def center_crop_arr(pil_image, image_size):
    # ADM's preprocessing (guided_diffusion/image_datasets.py), as DiT and LightningDiT use it.
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return arr[crop_y : crop_y + image_size, crop_x : crop_x + image_size]


class Folder(torch.utils.data.Dataset):
    def __init__(self, files, size):
        self.files, self.size = files, size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as img:
            arr = center_crop_arr(img.convert("RGB"), self.size)
        return torch.from_numpy(arr).permute(2, 0, 1).float() / 127.5 - 1.0


def main():
    folder, size, workers, batch, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(1)
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".jpg"))
    data = Folder(files, size)
    start = time.perf_counter()
    for i in range(min(len(files), 64)):
        data[i]
    print(f"per_image_ms {(time.perf_counter() - start) * 1000 / min(len(files), 64):.3f}", flush=True)

    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                                         persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    seen, start = 0, None
    while seen < batches:
        for x in loader:
            if start is None:
                start = time.perf_counter()  # after the first batch: the workers are up
            else:
                seen += 1
            if seen >= batches:
                break
    print(f"images_per_s {batches * batch / (time.perf_counter() - start):.1f}", flush=True)


if __name__ == "__main__":
    main()
