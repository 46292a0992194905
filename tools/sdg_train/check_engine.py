"""check_engine.py - the C engine against models.py on a trained checkpoint (the shipped model by
default), so the layout we train (whatever its VAE factor and attention levels) is proven to run
in the engine as PyTorch runs it, not only the tiny-sd1 golden layout.

One euler step at CFG 1 from given noise makes the engine's final latent equal the UNet's
denoised estimate, x - sigma_max * eps(x * c_in, t=999, text(prompt)) with x = noise * sigma_max;
the PNG it writes is the VAE decode of that latent. Both are recomputed here from the same fp16
weights, in float64 (a barely trained model amplifies float32 rounding to ~1e-3; the engine
matches float64 to ~1e-6): latent within 1e-4 relative to its max, PNG within 1 level of 255. A 9-channel
(inpainting) UNet also gets [mask = 1, latent of the all-masked picture]: that latent is a
posterior sample drawn with the engine's documented generator (engine/sampler/sampler.h:
Philox4x32-10 + Box-Muller, stream 2 = VAE), which engine_normals() reimplements.

Run from tools/: python3 -m sdg_train.check_engine [--model M] [--sdg build/engine/cli/sdg]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

from . import bpe, models, pngio, safetensors_io


def philox4x32_10(ctr, key):
    """Random123's Philox4x32-10 on uint32 arrays ctr [4, n] and key (k0, k1)."""
    c0, c1, c2, c3 = (c.astype(np.uint64) for c in ctr)
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    m32 = np.uint64(0xFFFFFFFF)
    for r in range(10):
        if r:
            k0, k1 = (k0 + np.uint64(0x9E3779B9)) & m32, (k1 + np.uint64(0xBB67AE85)) & m32
        p0, p1 = np.uint64(0xD2511F53) * c0, np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & m32, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & m32
    return c0, c1, c2, c3


def engine_normals(seed, stream, n):
    """The first n normals of the engine's stream (rng_normal_fill with offset 0)."""
    b = np.arange((n + 3) // 4, dtype=np.uint64)
    zeros = np.zeros_like(b)
    w = philox4x32_10((b & np.uint64(0xFFFFFFFF), b >> np.uint64(32), zeros + np.uint64(stream), zeros),
                      (seed & 0xFFFFFFFF, seed >> 32))
    u = [(x.astype(np.float64) + 0.5) / 4294967296.0 for x in w]
    z = []
    for e, o in ((u[0], u[1]), (u[2], u[3])):
        r, a = np.sqrt(-2.0 * np.log(e)), 2 * np.pi * o
        z += [r * np.cos(a), r * np.sin(a)]
    return np.stack(z, axis=1).reshape(-1)[:n].astype(np.float32)


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    p = argparse.ArgumentParser(description="Engine vs PyTorch on a trained checkpoint.")
    p.add_argument("--model", default=os.path.join(root, "models", "sdg-default.safetensors"))
    p.add_argument("--sdg", default=os.path.join(root, "build", "engine", "cli", "sdg"))
    p.add_argument("--prompt", default="a large red star on the left")
    a = p.parse_args(argv)

    m, cfg, meta = models.load_file(a.model)
    size, scale = int(meta["sdg.native_size"]), float(meta["sdg.scale_factor"])
    tok = bpe.Tokenizer.load(os.path.dirname(a.model))
    m = m.double()
    f = models.vae_factor(cfg)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn((1, cfg["z_ch"], size // f, size // f), generator=g)

    with tempfile.TemporaryDirectory() as tmp:
        safetensors_io.write(os.path.join(tmp, "noise.safetensors"), {"noise": noise.numpy()})
        subprocess.run([a.sdg, "-m", a.model, "-p", a.prompt, "-W", str(size), "-H", str(size),
                        "--sampler", "euler", "--steps", "1", "--cfg-scale", "1", "-s", "1", "-q",
                        "-t", "1", "--noise-in", os.path.join(tmp, "noise.safetensors"),
                        "--latent-out", os.path.join(tmp, "latent.safetensors"),
                        "-o", os.path.join(tmp, "out.png")], check=True)
        latent = safetensors_io.read(os.path.join(tmp, "latent.safetensors"))[0]["latent"]
        png = pngio.read_png(os.path.join(tmp, "out.png")).astype(np.int32)

    ac = models.sd_schedule()
    sigma = float(((1 - ac[999]) / ac[999]).sqrt())
    with torch.no_grad():
        ctx = m.text(torch.tensor([tok.tokenize77(a.prompt)]))
        x = noise.double() * sigma
        inp = x / (sigma ** 2 + 1) ** 0.5
        if models.unet_in_channels(cfg) == 9:
            mean, logvar = m.vae.encode(torch.zeros(1, 3, size, size, dtype=torch.float64))
            vae_noise = torch.from_numpy(engine_normals(1, 2, mean.numel()).astype(np.float64)).reshape(mean.shape)
            masked = (mean + torch.exp(0.5 * logvar) * vae_noise) * scale
            inp = torch.cat([inp, torch.ones_like(inp[:, :1]), masked], dim=1)
        eps = m.unet(inp, torch.tensor([999]), ctx)
        ref = x - sigma * eps
        img = m.vae.decode(ref / scale)[0].permute(1, 2, 0).numpy()
    ref = ref.numpy()
    ref_png = np.clip(np.round((img + 1) * 127.5), 0, 255).astype(np.int32)
    lat_err = float(np.abs(latent - ref).max() / np.abs(ref).max())
    png_err = int(np.abs(png[..., :3] - ref_png).max())
    print("%s: layout vae_mult %s (f=%d), UNet in %d, mult %s, attn %s; latent %s rel err %.2e, "
          "PNG max diff %d/255" % (os.path.basename(a.model), cfg["vae_mult"], f,
                                   models.unet_in_channels(cfg), cfg["unet_mult"], cfg["unet_attn"],
                                   list(latent.shape), lat_err, png_err))
    ok = latent.shape == ref.shape and lat_err <= 1e-4 and png_err <= 1
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
