"""The PyTorch side of bench_tokenizer: one full tokenizer training step (encoder, posterior sample,
decoder, loss, backward, AdamW) of the LDM AutoencoderKL of tests/fixtures/ldm_autoencoder.py (the
model vediff's parity fixtures come from; GroupNorm(32) here), with the loss of vediff::loss at its
defaults: l1 reconstruction + variance expansion + magnitude, each summed over an image and
averaged over the batch.

Usage: torch_tokenizer.py THREADS BATCH CH CH_MULT(e.g. 1,2,2) NUM_RES_BLOCKS Z_CHANNELS RESOLUTION [recipe|plain] [bf16]
With bf16 last, the tokenizer's encode and decode run under torch.autocast("cpu", dtype=torch.bfloat16)
(oneDNN's bf16 convolutions; weights, optimizer and losses fp32), the peer of vediff's bf16_mixed.
With `recipe`: LDM's real-resolution step on RGB images (the code of LDM's LPIPSWithDiscriminator,
written here on tests/fixtures/tokenizer_critics.py's networks, random weights): L1 + LPIPS added
to every pixel (weight 1) + VE + magnitude + the hinge PatchGAN term (ndf 64) with LDM's adaptive
weight (autograd.grad of both parts with respect to decoder.conv_out.weight), AdamW step, then the
discriminator's hinge step on x and the detached x̂ with its own AdamW (as vediff, the
reconstruction of the tokenizer's step is reused).
It builds the model, prints `rss_baseline_kib` (ru_maxrss after importing torch, before the model
is built), `parameters` and `ready`, then serves commands from stdin, one a line, so that
bench_tokenizer can interleave its steps with vediff's (both then see the same machine load):
  w   a warm-up step; s   a timed step (each prints `step_ms T loss L`);
  q   prints faults_per_step (minor page faults per timed step), peak_rss_kib (ru_maxrss),
      vm_hwm_kib (/proc/self/status VmHWM, the kernel's own peak) and `end`, and exits.
By hand: printf 'w\nw\ns\ns\ns\nq\n' | /usr/bin/python3 torch_tokenizer.py 2 64 64 1,2,2 1 4 32"""
import os
import resource
import sys
import time

import torch

# The repository's one PyTorch LDM AutoencoderKL, the model the parity fixtures come from.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from ldm_autoencoder import AutoencoderKL  # noqa: E402
from tokenizer_critics import LPIPS, PatchGAN  # noqa: E402


def max_rss_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def vm_hwm_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def latent_terms(logvar, z, ve_weight=0.1, ve_delta=1e-6, mag_weight=1e-6, mag_tau=1.0):
    """VE + magnitude, each summed over the elements of one image, averaged over the batch."""
    b = z.shape[0]
    ve = ve_weight * (1.0 / (torch.exp(logvar) + ve_delta)).sum() / b
    mag = mag_weight * torch.exp(z.abs() - mag_tau).sum() / b
    return ve + mag


def tokenizer_loss(x, x_hat, mean, logvar, z):
    """l1 + VE + magnitude, every term summed over the elements of one image, averaged over the batch."""
    return (x - x_hat).abs().sum() / x.shape[0] + latent_terms(logvar, z)


def main():
    threads, batch, ch = (int(v) for v in sys.argv[1:4])
    ch_mult = tuple(int(v) for v in sys.argv[4].split(","))
    num_res_blocks, z_channels, resolution = (int(v) for v in sys.argv[5:8])
    recipe = len(sys.argv) > 8 and sys.argv[8] == "recipe"
    bf16 = sys.argv[-1] == "bf16"
    channels = 3 if recipe else 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    print(f"rss_baseline_kib {max_rss_kib()}", flush=True)

    model = AutoencoderKL(dict(in_channels=channels, out_channels=channels, ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks,
                               z_channels=z_channels, embed_dim=z_channels, resolution=resolution,
                               attn_resolutions=[], groups=32))
    if bf16:
        # PyTorch 1.13's CPU autocast lists no policy for group_norm, which then fails on a bf16
        # input with fp32 weights: its input is cast back to fp32, which is also vediff's policy
        # (norms stay fp32).
        for m in model.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.register_forward_pre_hook(lambda module, inputs: tuple(t.float() for t in inputs))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.5, 0.9), weight_decay=1e-2)
    x = torch.rand(batch, channels, resolution, resolution) * 2 - 1
    print(f"parameters {sum(p.numel() for p in model.parameters())}", flush=True)

    if recipe:
        perceptual = LPIPS(1).eval()
        for p in perceptual.parameters():
            p.requires_grad_(False)
        disc = PatchGAN(channels, 64)
        opt_d = torch.optim.AdamW(disc.parameters(), lr=1e-4, betas=(0.5, 0.9), weight_decay=0.0)
        last_layer = model.decoder.conv_out.weight

    def forward():
        """encode, posterior sample (logvar clamped as LDM's), decode: mean, logvar, z, x_hat."""
        opt.zero_grad(set_to_none=False)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            moments = model.encode(x)
        mean, logvar = torch.chunk(moments.float(), 2, dim=1)
        logvar = torch.clamp(logvar, -30.0, 20.0)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            x_hat = model.decode(z)
        return mean, logvar, z, x_hat.float()

    def recipe_step():
        mean, logvar, z, x_hat = forward()
        b = x.shape[0]
        rec = (x - x_hat).abs() + 1.0 * perceptual(x_hat, x).reshape(-1, 1, 1, 1)
        nll = rec.sum() / b
        latent = latent_terms(logvar, z)
        g_loss = -disc(x_hat).mean()
        nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
        g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
        d_weight = torch.clamp(torch.norm(nll_grad) / (torch.norm(g_grad) + 1e-4), 0.0, 1e4).detach() * 0.5
        loss = nll + latent + d_weight * g_loss
        loss.backward()
        opt.step()
        opt_d.zero_grad(set_to_none=False)
        d_loss = 0.5 * (torch.relu(1.0 - disc(x.detach())).mean() + torch.relu(1.0 + disc(x_hat.detach())).mean())
        d_loss.backward()
        opt_d.step()
        return loss.item()

    def step():
        mean, logvar, z, x_hat = forward()
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
            loss = recipe_step() if recipe else step()
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
