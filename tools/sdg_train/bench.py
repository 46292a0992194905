"""bench.py - per-step training times of the default configuration (models.DEFAULT_CONFIG; run
on an idle machine before planning a run: python3 -m sdg_train.bench). Wall and process CPU
time; under contention from other processes the wall time grows and the CPU time includes
OpenMP spin-waiting.
"""
import os
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import time

import torch

from . import models


def bench(name, fn, n=5):
    fn()
    t, c = time.time(), time.process_time()
    for _ in range(n):
        fn()
    w, cp = (time.time() - t) / n, (time.process_time() - c) / n
    print("%-60s wall %.2f s/step  cpu %.2f s/step (=> ~%.2f s/step on 2 free cores)" % (name, w, cp, cp / 2), flush=True)


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    cfg = dict(models.DEFAULT_CONFIG, vocab=610)
    size, f = cfg["size"], models.vae_factor(cfg)
    vae = models.vae_of(cfg)
    opt = torch.optim.Adam(vae.parameters(), 1e-3)
    x = torch.randn(32, 3, size, size)

    def vae_step():
        m, lv = vae.encode(x)
        loss = (vae.decode(m + torch.randn_like(m) * (0.5 * lv).exp()) - x).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    bench("vae %dpx ch%d %s b32" % (size, cfg["vae_ch"], cfg["vae_mult"]), vae_step)
    xe = torch.randn(64, 3, size, size)
    with torch.no_grad():
        bench("vae encode b64", lambda: vae.encode(xe), 2)
    m = models.SD1(cfg)
    opt = torch.optim.AdamW(list(m.unet.parameters()) + list(m.text.parameters()), 1e-4)
    cin = models.unet_in_channels(cfg)
    xu = torch.randn(64, cin, size // f, size // f)
    ids = torch.randint(0, cfg["vocab"], (64, 77))
    ts = torch.randint(0, 1000, (64,))

    def diffusion_step():
        loss = (m.unet(xu, ts, m.text(ids)) - xu[:, :cfg["z_ch"]]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    bench("diffusion unet in %d ch%d %s attn %s, text w%d, b64" %
          (cin, cfg["unet_ch"], cfg["unet_mult"], cfg["unet_attn"], cfg["text_width"]), diffusion_step)


if __name__ == "__main__":
    main()
