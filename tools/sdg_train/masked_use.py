"""masked_use.py - does a 9-channel (inpainting) UNet read the masked picture?

For 64 training pictures of a finished run, the x0 estimate outside each picture's first
selection is compared with the truth, once with the masked picture's latent as input and once
with everything masked (what text-to-image gives it), from the same noise, at a few timesteps.
A UNet that uses the masked picture has a much smaller error with it.

Run from tools/: python3 -m sdg_train.masked_use --workdir W  (W holds final.pt, latents.npz,
masks.npz, data.npz and vocab/ of a train.py run with unet_in 9)
"""
import argparse
import os
import sys

import numpy as np
import torch

from . import bpe, models


def main(argv=None):
    p = argparse.ArgumentParser(description="x0 error outside the hole, with and without the masked picture.")
    p.add_argument("--workdir", required=True)
    p.add_argument("--n", type=int, default=64)
    a = p.parse_args(argv)
    wd = a.workdir
    st = torch.load(os.path.join(wd, "final.pt"))
    cfg, scale = st["config"], st["scale_factor"]
    if models.unet_in_channels(cfg) != 9:
        raise SystemExit("%s: not a 9-channel UNet" % wd)
    m = models.SD1(cfg).eval()
    m.load_sd1_state_dict(st["state_dict"])
    tok = bpe.Tokenizer.load(os.path.join(wd, "vocab"))
    lat, mk = np.load(os.path.join(wd, "latents.npz")), np.load(os.path.join(wd, "masks.npz"))
    caps = [str(c) for c in np.load(os.path.join(wd, "data.npz"))["captions"][:a.n]]
    x0 = torch.from_numpy(lat["mean"][:a.n]) * scale
    hole = torch.from_numpy(mk["lat_masks"][:a.n, 0]).float()[:, None]
    masked = torch.from_numpy(mk["means"][:a.n, 0].astype(np.float32)) * scale
    full = torch.from_numpy(mk["full_mean"]).float()[None].expand_as(masked) * scale
    known = (hole < 0.5).expand_as(x0)
    ac = models.sd_schedule()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ctx = m.text(torch.tensor([tok.tokenize77(c) for c in caps]))
        print("| t | x0 error outside the hole, with the masked picture | with everything masked |")
        print("| --- | --- | --- |")
        for t in (900, 700, 400):
            at = ac[t]
            xt = at.sqrt() * x0 + (1 - at).sqrt() * torch.randn(x0.shape, generator=g)
            errs = []
            for mask_ch, masked_lat in ((hole, masked), (torch.ones_like(hole), full)):
                eps = m.unet(torch.cat([xt, mask_ch, masked_lat], 1), torch.full((a.n,), t), ctx)
                x0_hat = (xt - (1 - at).sqrt() * eps) / at.sqrt()
                errs.append((x0_hat - x0).abs()[known].mean().item() / x0.abs().mean().item())
            print("| %d | %.3f | %.3f |" % (t, errs[0], errs[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
