"""snapshot.py - a look at a run in progress: writes PEEKDIR/final.pt (and PEEKDIR/vocab/) from
the work folder's last diffusion checkpoint (its EMA weights) and the finished VAE, in the form
export.py reads, so a half-trained model can be exported and evaluated while training goes on:

    python3 -m sdg_train.snapshot --workdir W --out PEEK
    python3 -m sdg_train.export --workdir PEEK --out PEEK/model
    python3 -m sdg_train.evaluate --model PEEK/model/sdg-default.safetensors --captions 12 ...

Reads only; the run itself is not disturbed (checkpoints are replaced by rename, so a read never
sees half a file). Not here: training (train.py).
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch

from . import bpe, models


def snapshot(workdir, out):
    with open(os.path.join(workdir, "settings.json")) as f:
        settings = json.load(f)
    cfg = dict(settings["config"])
    tok = bpe.Tokenizer.load(os.path.join(workdir, "vocab"))
    cfg["vocab"] = len(tok)
    ck = torch.load(os.path.join(workdir, "ckpt", "diffusion.pt"))
    unet = models.unet_of(cfg)
    text = models.text_of(cfg)
    unet.load_state_dict(ck["unet"])
    text.load_state_dict(ck["text"])
    with torch.no_grad():
        for e, p in zip(ck["ema"], list(unet.parameters()) + list(text.parameters())):
            p.copy_(e)
    vae = models.vae_of(cfg)
    vae.load_state_dict(torch.load(os.path.join(workdir, "vae.pt")))
    scale = float(np.load(os.path.join(workdir, "latents.npz"))["scale"])
    sd = {k: v.clone() for k, v in models.sd1_state_dict(unet, vae, text).items()}
    os.makedirs(os.path.join(out, "vocab"), exist_ok=True)
    for f in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(workdir, "vocab", f), os.path.join(out, "vocab", f))
    torch.save({"state_dict": sd, "config": cfg, "scale_factor": scale, "elapsed_min": 0.0,
                "settings": settings, "diffusion_step": ck["step"]}, os.path.join(out, "final.pt"))
    return ck["step"]


def main(argv=None):
    p = argparse.ArgumentParser(description="Snapshot a training run in progress (EMA weights).")
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    print("snapshot of diffusion step %d -> %s" % (snapshot(a.workdir, a.out), a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
