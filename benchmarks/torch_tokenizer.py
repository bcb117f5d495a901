"""The PyTorch side of bench_tokenizer: one full tokenizer training step (encoder, posterior sample,
decoder, loss, backward, AdamW) of the LDM AutoencoderKL architecture, written here from the facts
in ../shared/reference-facts.md (GroupNorm(32, eps 1e-6), swish, ResnetBlock, AttnBlock over
positions, asymmetric-pad Downsample, nearest Upsample), with the loss of vediff::loss at its
defaults: l1 reconstruction + variance expansion + magnitude, each summed over an image and
averaged over the batch.

Usage: torch_tokenizer.py THREADS BATCH CH CH_MULT(e.g. 1,2,2) NUM_RES_BLOCKS Z_CHANNELS RESOLUTION
It builds the model, prints `rss_baseline_kib` (ru_maxrss after importing torch, before the model
is built), `parameters` and `ready`, then serves commands from stdin, one a line, so that
bench_tokenizer can interleave its steps with vediff's (both then see the same machine load):
  w   a warm-up step; s   a timed step (each prints `step_ms T loss L`);
  q   prints faults_per_step (minor page faults per timed step), peak_rss_kib (ru_maxrss),
      vm_hwm_kib (/proc/self/status VmHWM, the kernel's own peak) and `end`, and exits.
By hand: printf 'w\nw\ns\ns\ns\nq\n' | /usr/bin/python3 torch_tokenizer.py 2 64 64 1,2,2 1 4 32"""
import resource
import sys
import time

import torch
from torch import nn
import torch.nn.functional as F


def max_rss_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def vm_hwm_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def norm(channels):
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1 = norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if self.nin_shortcut is not None else x) + h


class AttnBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, hh, ww = q.shape
        q = q.reshape(b, c, hh * ww).permute(0, 2, 1)          # (B, N, C)
        k = k.reshape(b, c, hh * ww)                           # (B, C, N)
        w = torch.softmax(torch.bmm(q, k) * (c ** -0.5), dim=2)  # (B, Nq, Nk)
        v = v.reshape(b, c, hh * ww)
        h = torch.bmm(v, w.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    def __init__(self, in_channels, ch, ch_mult, num_res_blocks, z_channels, resolution, attn_resolutions=()):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        in_mult = (1,) + tuple(ch_mult)
        res = resolution
        self.down = nn.ModuleList()
        for i, mult in enumerate(ch_mult):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            cin = ch * in_mult[i]
            for _ in range(num_res_blocks):
                level.block.append(ResnetBlock(cin, ch * mult))
                cin = ch * mult
                if res in attn_resolutions:
                    level.attn.append(AttnBlock(cin))
            if i != len(ch_mult) - 1:
                level.downsample = Downsample(cin)
                res //= 2
            self.down.append(level)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.attn_1, self.mid.block_2 = ResnetBlock(cin, cin), AttnBlock(cin), ResnetBlock(cin, cin)
        self.norm_out = norm(cin)
        self.conv_out = nn.Conv2d(cin, 2 * z_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for i, level in enumerate(self.down):
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, out_channels, ch, ch_mult, num_res_blocks, z_channels, resolution, attn_resolutions=()):
        super().__init__()
        cin = ch * ch_mult[-1]
        res = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, cin, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.attn_1, self.mid.block_2 = ResnetBlock(cin, cin), AttnBlock(cin), ResnetBlock(cin, cin)
        up = []
        for i in reversed(range(len(ch_mult))):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                level.block.append(ResnetBlock(cin, ch * ch_mult[i]))
                cin = ch * ch_mult[i]
                if res in attn_resolutions:
                    level.attn.append(AttnBlock(cin))
            if i != 0:
                level.upsample = Upsample(cin)
                res *= 2
            up.insert(0, level)
        self.up = nn.ModuleList(up)
        self.norm_out = norm(cin)
        self.conv_out = nn.Conv2d(cin, out_channels, 3, padding=1)

    def forward(self, z):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for level in reversed(self.up):
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    def __init__(self, in_channels, ch, ch_mult, num_res_blocks, z_channels, resolution, embed_dim=None):
        super().__init__()
        embed_dim = embed_dim or z_channels
        self.encoder = Encoder(in_channels, ch, ch_mult, num_res_blocks, z_channels, resolution)
        self.decoder = Decoder(in_channels, ch, ch_mult, num_res_blocks, z_channels, resolution)
        self.quant_conv = nn.Conv2d(2 * z_channels, 2 * embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)


def tokenizer_loss(x, x_hat, mean, logvar, z, ve_weight=0.1, ve_delta=1e-6, mag_weight=1e-6, mag_tau=1.0):
    """Every term summed over the elements of one image, averaged over the batch."""
    b = x.shape[0]
    rec = (x - x_hat).abs().sum() / b
    ve = ve_weight * (1.0 / (torch.exp(logvar) + ve_delta)).sum() / b
    mag = mag_weight * torch.exp(z.abs() - mag_tau).sum() / b
    return rec + ve + mag


def main():
    threads, batch, ch = (int(v) for v in sys.argv[1:4])
    ch_mult = tuple(int(v) for v in sys.argv[4].split(","))
    num_res_blocks, z_channels, resolution = (int(v) for v in sys.argv[5:8])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    print(f"rss_baseline_kib {max_rss_kib()}", flush=True)

    model = AutoencoderKL(1, ch, ch_mult, num_res_blocks, z_channels, resolution)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.5, 0.9), weight_decay=1e-2)
    x = torch.rand(batch, 1, resolution, resolution) * 2 - 1
    print(f"parameters {sum(p.numel() for p in model.parameters())}", flush=True)

    def step():
        opt.zero_grad(set_to_none=False)
        moments = model.quant_conv(model.encoder(x))
        mean, logvar = torch.chunk(moments, 2, dim=1)
        logvar = torch.clamp(logvar, -30.0, 20.0)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        x_hat = model.decoder(model.post_quant_conv(z))
        loss = tokenizer_loss(x, x_hat, mean, logvar, z)
        loss.backward()
        opt.step()
        return loss.item()

    print("ready", flush=True)
    faults_before, timed = None, 0
    for line in sys.stdin:
        command = line.strip()
        if command in ("w", "s"):
            if command == "s":
                timed += 1
                if faults_before is None:
                    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            loss = step()
            print(f"step_ms {1000 * (time.perf_counter() - start):.3f} loss {loss:.6g}", flush=True)
        elif command == "q":
            break
    if timed:
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
        print(f"faults_per_step {faults / timed:.0f}", flush=True)
    print(f"peak_rss_kib {max_rss_kib()}", flush=True)
    print(f"vm_hwm_kib {vm_hwm_kib()}", flush=True)
    print("end", flush=True)


if __name__ == "__main__":
    main()
