"""check_models.py - checks models.py against the tiny-sd1 goldens: the same key names and shapes
as tiny-sd1.safetensors, and the reference outputs of its text encoder, UNet and VAE within 1e-4
(relative to max |reference|). Run: python3 -m sdg_train.check_models SHARED_REFERENCE_DIR
"""
import os
import sys

import numpy as np
import torch

from . import models, safetensors_io

TINY = dict(size=64, z_ch=4, vae_ch=32, vae_mult=[1, 1, 2, 2], vae_blocks=1,
            unet_ch=32, unet_mult=[1, 2], unet_blocks=1, unet_attn=[0],
            text_width=64, text_layers=2, vocab=49408)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def main(ref_dir):
    w, _ = safetensors_io.read(os.path.join(ref_dir, "golden", "tiny-sd1.safetensors"))
    r, _ = safetensors_io.read(os.path.join(ref_dir, "golden", "tiny-sd1-reference.safetensors"))
    m = models.SD1(TINY).eval()
    mine = {k: tuple(v.shape) for k, v in m.sd1_state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in w.items()
              if k.startswith(("model.", "first_stage_model.", "cond_stage_model."))}
    ok = True
    if mine != theirs:
        ok = False
        print("key/shape mismatch:")
        for k in sorted(set(mine) | set(theirs)):
            if mine.get(k) != theirs.get(k):
                print("  ", k, mine.get(k), theirs.get(k))
    m.load_sd1_state_dict({k: v for k, v in w.items() if k in mine})
    errs = {}
    with torch.no_grad():
        ids = torch.as_tensor(r["te.input_ids"].astype(np.int64))
        errs["text"] = rel(m.text(ids).numpy(), r["te.last_hidden_state"])
        eps = m.unet(torch.as_tensor(r["unet.a.x"]), torch.as_tensor(r["unet.a.t"]),
                     torch.as_tensor(r["unet.a.context"]))
        errs["unet.a"] = rel(eps.numpy(), r["unet.a.eps"])
        eps = m.unet(torch.as_tensor(r["unet.b.x"]), torch.as_tensor(r["unet.b.t"]),
                     torch.as_tensor(r["unet.b.context"]))
        errs["unet.b"] = rel(eps.numpy(), r["unet.b.eps"])
        mom = m.vae.quant_conv(m.vae.encoder(torch.as_tensor(r["vae.enc.image"])))
        errs["vae.enc"] = rel(mom.numpy(), r["vae.enc.moments"])
        errs["vae.dec"] = rel(m.vae.decode(torch.as_tensor(r["vae.dec.z"])).numpy(), r["vae.dec.image"])
        ac = models.sd_schedule().numpy()
        errs["schedule"] = rel(ac, r["sched.alphas_cumprod"])
    for k, e in errs.items():
        print("%-9s rel err %.2e" % (k, e))
        ok = ok and e <= 1e-4
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "../shared/reference"))
