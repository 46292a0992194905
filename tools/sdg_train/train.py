"""train.py - trains the default model in stages, resumably, in a work folder:

  data      WORKDIR/data.npz: the procedural set (dataset.py), N pictures at the native size
  bpe       WORKDIR/vocab/{vocab.json,merges.txt} learned from the training captions (bpe.py)
  cover     WORKDIR/cover.npy: where each picture's objects are (grown by 2 pixels), from the
            descriptions
  vae       AutoencoderKL: L1 + L2 + image-gradient L1 reconstruction, object pixels weighted
            1 + --vae-object-weight, tiny KL; batch from a fixed per-step index draw
  latents   WORKDIR/latents.npz: posterior mean/logvar of every picture; the latent scale is
            1/std of the means (SD's scale_factor rule)
  masks     (9-channel inpainting UNet) WORKDIR/masks.npz: MASKS_PER_PICTURE selections per
            picture (dataset.training_mask), their latent masks (nearest, as the engine), which
            object each hides, and the posterior of each masked picture (pixels under the mask set
            to 0, as SD 1.5-inpainting and the engine do), plus the posterior of the all-masked
            picture
  diffusion text encoder + UNet jointly: eps prediction on the SD schedule, t uniform, 10% of
            captions replaced by "" (for CFG); a 9-channel UNet also gets [mask, masked picture's
            latent], the whole picture masked in --full-mask-p of the samples (text-to-image),
            its unmasked latent pixels weighted up to an x0 loss (--known-weight), the hole's too
            (--hole-weight), and where the hole hides an object, --object-caption-p of the
            captions name only that object; AdamW, warm-up + cosine, EMA of the weights
  inpaint   (--inpaint-steps) the plain UNet of the diffusion stage widened to 9 input channels,
            the new ones starting at zero (as SD 1.5-inpainting was made from SD 1.2), trained on
            as a 9-channel UNet (above) at --inpaint-lr, EMA decay --inpaint-ema
  final     WORKDIR/final.pt: the EMA weights with SD1 single-file names (export.py writes fp16)

Reproducible: every random draw of step s of stage k comes from generators seeded with
(seed, k, s), so an interrupted and resumed run makes the same batches and noise as an
uninterrupted one. Checkpoints every --ckpt-min minutes and at each stage end (temp file +
rename), and on SIGTERM/SIGINT; the next start resumes from them. Progress lines go to
WORKDIR/progress.log. --budget-min stops a run that overruns its time (the stage's weights so
far are kept and the run goes on to the next stage, noting it in the log).

Not here: network definitions (models.py), file export (export.py), scoring (evaluate.py).
"""
import argparse
import json
import math
import os
import signal
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # torch's own threads do the parallel work

import numpy as np
import torch

from . import bpe, dataset, models

STAGE_VAE, STAGE_DIFF, STAGE_MASKS, STAGE_INPAINT = 1, 2, 3, 4
MASKS_PER_PICTURE = 2
# Options whose default changed the training when they were added: the value that trains as
# before them, for resuming a work folder started earlier.
OPTION_WAS = {"vae_object_weight": 0.0}
UNET_CONV_IN = "input_blocks.0.0.weight"   # [model_ch, in_ch, 3, 3]


class Run:
    def __init__(self, args):
        self.args = args
        self.wd = args.workdir
        os.makedirs(os.path.join(self.wd, "ckpt"), exist_ok=True)
        self.t_start = time.time()
        self.elapsed_before = 0.0   # seconds spent in earlier sessions of this run
        self.stop = False
        self.log_f = open(os.path.join(self.wd, "progress.log"), "a", buffering=1)
        state_path = os.path.join(self.wd, "run-state.json")
        if os.path.exists(state_path):
            with open(state_path) as f:
                self.elapsed_before = json.load(f).get("elapsed", 0.0)

    def elapsed(self):
        return self.elapsed_before + time.time() - self.t_start

    def save_elapsed(self):
        path = os.path.join(self.wd, "run-state.json")
        with open(path + ".tmp", "w") as f:
            json.dump({"elapsed": self.elapsed()}, f)
        os.replace(path + ".tmp", path)

    def log(self, msg):
        line = "%s [%7.1f min] %s" % (time.strftime("%Y-%m-%d %H:%M:%S"), self.elapsed() / 60, msg)
        self.log_f.write(line + "\n")
        if not self.args.quiet:
            print(line, flush=True)

    def over_budget(self):
        return self.args.budget_min > 0 and self.elapsed() > self.args.budget_min * 60


def gen(seed, stage, step):
    g = torch.Generator()
    g.manual_seed((seed * 1000003 + stage * 7919 + step) & ((1 << 62) - 1))
    return g, np.random.Generator(np.random.PCG64([seed, stage, step]))


def lr_at(step, total, base, warmup):
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def save_ckpt(path, obj):
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)


def to_unit(imgs_u8):
    return imgs_u8.permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ---------------------------------------------------------------------------------------------

def stage_data(run, cfg):
    a = run.args
    path = os.path.join(run.wd, "data.npz")
    if not os.path.exists(path):
        t0 = time.time()
        imgs, caps = dataset.build(a.n_images, cfg["size"], a.seed)
        np.savez(path + ".tmp.npz", images=imgs, captions=np.array(caps))
        os.replace(path + ".tmp.npz", path)
        run.log("data: %d pictures %dx%d in %.1f s" % (a.n_images, cfg["size"], cfg["size"], time.time() - t0))
    d = np.load(path)
    imgs, caps = d["images"], [str(c) for c in d["captions"]]
    held = set(dataset.heldout_captions())
    leak = [c for c in caps if c in held]
    if leak:
        raise SystemExit("held-out captions in the training set: %r" % leak[:3])
    vdir = os.path.join(run.wd, "vocab")
    if not os.path.exists(os.path.join(vdir, "merges.txt")):
        os.makedirs(vdir, exist_ok=True)
        tok = bpe.Tokenizer(bpe.learn(caps))
        tok.save(vdir)
        run.log("bpe: %d merges, vocabulary %d" % (len(tok.merges), len(tok)))
    return imgs, caps, bpe.Tokenizer.load(vdir)


def object_cover(run, imgs):
    """uint8 [N, H, W]: 255 x the coverage of each picture's objects grown by 2 pixels
    (WORKDIR/cover.npy, made once from the descriptions)."""
    path = os.path.join(run.wd, "cover.npy")
    if not os.path.exists(path):
        t0 = time.time()
        n, size = len(imgs), imgs.shape[1]
        cover = np.empty((n, size, size), np.uint8)
        for i in range(n):
            cover[i] = np.rint(255 * dataset.objects_mask(dataset.sample(i, run.args.seed), size, grow=2.0))
        np.save(path + ".tmp.npy", cover)
        os.replace(path + ".tmp.npy", path)
        run.log("cover: objects are %.1f%% of the pixels (grown by 2), %.1f s" %
                (100.0 * (cover > 127).mean(), time.time() - t0))
    return np.load(path)


def stage_vae(run, cfg, imgs):
    a = run.args
    final = os.path.join(run.wd, "vae.pt")
    vae = models.vae_of(cfg)
    if os.path.exists(final):
        vae.load_state_dict(torch.load(final))
        return vae
    torch.manual_seed(a.seed)
    vae = models.vae_of(cfg)
    opt = torch.optim.AdamW(vae.parameters(), lr=a.vae_lr, weight_decay=0.0)
    ck = os.path.join(run.wd, "ckpt", "vae.pt")
    step = 0
    if os.path.exists(ck):
        st = torch.load(ck)
        vae.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step = st["step"]
        run.log("vae: resumed at step %d" % step)
    data = torch.from_numpy(imgs)
    cover = torch.from_numpy(object_cover(run, imgs)) if a.vae_object_weight > 0 else None
    total, bs = a.vae_steps, a.vae_batch
    t_last_ck, t0, s0, loss_avg = time.time(), time.time(), step, None

    def wmean(e, w):
        return (w * e).sum() / (w.sum() * e.shape[1])
    while step < total and not run.stop:
        g, rng = gen(a.seed, STAGE_VAE, step)
        idx = torch.from_numpy(rng.integers(0, len(data), bs))
        x = to_unit(data[idx])
        for pg in opt.param_groups:
            pg["lr"] = lr_at(step, total, a.vae_lr, 100)
        mean, logvar = vae.encode(x)
        z = mean + torch.randn(mean.shape, generator=g) * torch.exp(0.5 * logvar)
        y = vae.decode(z)
        # Objects are a tenth of the pixels but all of what a caption says: weighting them (and a
        # 2-pixel rim, where the outline is) keeps the loss from being spent on flat backgrounds.
        if cover is None:
            w = torch.ones_like(x[:, :1])
        else:
            w = 1.0 + a.vae_object_weight / 255.0 * cover[idx].float()[:, None]
        rec = wmean((y - x).abs() + (y - x) ** 2, w)
        gx = wmean(((y[..., 1:] - y[..., :-1]) - (x[..., 1:] - x[..., :-1])).abs(), w[..., 1:])
        gy = wmean(((y[..., 1:, :] - y[..., :-1, :]) - (x[..., 1:, :] - x[..., :-1, :])).abs(), w[..., 1:, :])
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3)).mean()
        loss = rec + 0.5 * (gx + gy) + a.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        if step % a.log_every == 0 or step == total:
            per = (time.time() - t0) / (step - s0)
            run.log("vae: step %d/%d loss %.4f (rec %.4f kl %.1f) %.2f s/step ETA %.1f min" %
                    (step, total, loss_avg, rec.item(), kl.item(), per, per * (total - step) / 60))
        if time.time() - t_last_ck > a.ckpt_min * 60 or run.stop:
            save_ckpt(ck, {"model": vae.state_dict(), "opt": opt.state_dict(), "step": step})
            run.save_elapsed()
            t_last_ck = time.time()
        if run.over_budget():
            run.log("vae: wall budget reached at step %d; going on with these weights" % step)
            break
    if run.stop:
        save_ckpt(ck, {"model": vae.state_dict(), "opt": opt.state_dict(), "step": step})
        run.save_elapsed()
        raise SystemExit(0)
    save_ckpt(final, vae.state_dict())
    run.save_elapsed()
    run.log("vae: done at step %d" % step)
    return vae


def stage_latents(run, vae, imgs):
    path = os.path.join(run.wd, "latents.npz")
    if not os.path.exists(path):
        t0 = time.time()
        vae.eval()
        means, logvars = [], []
        with torch.no_grad():
            for i in range(0, len(imgs), 64):
                m, lv = vae.encode(to_unit(torch.from_numpy(imgs[i:i + 64])))
                means.append(m.numpy())
                logvars.append(lv.numpy())
        mean, logvar = np.concatenate(means), np.concatenate(logvars)
        scale = float(1.0 / mean.std())
        # Reconstruction error of the means, for the log.
        with torch.no_grad():
            x = to_unit(torch.from_numpy(imgs[:256]))
            err = (vae.decode(torch.from_numpy(mean[:256])).clamp(-1, 1) - x).abs().mean().item() * 127.5
        np.savez(path + ".tmp.npz", mean=mean, logvar=logvar, scale=np.float32(scale))
        os.replace(path + ".tmp.npz", path)
        run.log("latents: %s, std %.3f -> scale_factor %.4f, mean abs pixel error %.2f/255, %.1f s" %
                (mean.shape, mean.std(), scale, err, time.time() - t0))
    d = np.load(path)
    return d["mean"], d["logvar"], float(d["scale"])


def stage_masks(run, cfg, vae, imgs):
    """Returns (latent masks uint8 [N, K, h, w], masked means and stds float16 [N, K, c, h, w],
    all-masked mean and std [c, h, w], index of the object each selection hides int8 [N, K] or -1)."""
    a = run.args
    path = os.path.join(run.wd, "masks.npz")
    f = models.vae_factor(cfg)
    if os.path.exists(path) and "hidden" not in np.load(path).files:
        run.log("masks: %s predates the hidden-object indices; making it again (same draws)" % path)
        os.remove(path)
    if not os.path.exists(path):
        t0 = time.time()
        vae.eval()
        n, size, k = len(imgs), imgs.shape[1], MASKS_PER_PICTURE
        lat_masks = np.empty((n, k, size // f, size // f), np.uint8)
        means = np.empty((n, k, cfg["z_ch"], size // f, size // f), np.float16)
        stds = np.empty_like(means)
        hidden = np.empty((n, k), np.int8)
        with torch.no_grad():
            for i0 in range(0, n, 32):
                i1 = min(n, i0 + 32)
                drawn = [[dataset.training_mask(desc, size,
                                                np.random.Generator(np.random.PCG64([a.seed, STAGE_MASKS, i, j])))
                          for j in range(k)]
                         for i, desc in ((i, dataset.sample(i, a.seed)) for i in range(i0, i1))]
                masks = np.array([[m for m, _ in row] for row in drawn])      # [b, k, H, W]
                hidden[i0:i1] = [[o for _, o in row] for row in drawn]
                # The engine's latent mask: the pixel at (y*f, x*f) of the binarised mask.
                lat_masks[i0:i1] = masks[:, :, ::f, ::f]
                x = to_unit(torch.from_numpy(imgs[i0:i1]))[:, None] * torch.from_numpy(~masks)[:, :, None]
                m, lv = vae.encode(x.reshape(-1, 3, size, size))
                means[i0:i1] = m.reshape(i1 - i0, k, *m.shape[1:]).numpy()
                stds[i0:i1] = torch.exp(0.5 * lv).reshape(i1 - i0, k, *m.shape[1:]).numpy()
            m, lv = vae.encode(torch.zeros(1, 3, size, size))
        np.savez(path + ".tmp.npz", lat_masks=lat_masks, means=means, stds=stds,
                 full_mean=m[0].numpy(), full_std=torch.exp(0.5 * lv)[0].numpy(), hidden=hidden)
        os.replace(path + ".tmp.npz", path)
        run.log("masks: %d per picture, %.1f%% of latent pixels masked on average, %.1f s" %
                (k, 100.0 * lat_masks.mean(), time.time() - t0))
    d = np.load(path)
    return d["lat_masks"], d["means"], d["stds"], d["full_mean"], d["full_std"], d["hidden"]


def masked_input(masks, idx, g, rng, full_p, scale):
    """The 9-channel UNet's extra input [b, 1 + c, h, w] for the pictures idx: one of each
    picture's selections, or (with probability full_p) everything masked; and the index of the
    object each selection hides [b] (-1: none, or everything masked)."""
    lat_masks, means, stds, full_mean, full_std, hidden = masks
    b = len(idx)
    k = torch.from_numpy(rng.integers(0, lat_masks.shape[1], b))
    full = torch.from_numpy(rng.random(b) < full_p)
    obj = torch.from_numpy(hidden)[idx, k].long()
    obj[full] = -1
    mk = torch.from_numpy(lat_masks)[idx, k].float()[:, None]
    mean = torch.from_numpy(means)[idx, k].float()
    std = torch.from_numpy(stds)[idx, k].float()
    mk[full] = 1.0
    mean[full] = torch.from_numpy(full_mean)
    std[full] = torch.from_numpy(full_std)
    lat = (mean + std * torch.randn(mean.shape, generator=g)) * scale
    return torch.cat([mk, lat], dim=1), obj


def widened_unet(unet, cfg9):
    """A 9-channel copy of a plain UNet whose 5 new input channels (mask, masked picture's latent)
    start at zero, as SD 1.5-inpainting was made from SD 1.2: at first it is the plain model."""
    wide = models.unet_of(cfg9)
    sd = dict(unet.state_dict())
    w = sd[UNET_CONV_IN]
    new_ch = models.unet_in_channels(cfg9) - w.shape[1]
    sd[UNET_CONV_IN] = torch.cat([w, torch.zeros(w.shape[0], new_ch, *w.shape[2:])], dim=1)
    wide.load_state_dict(sd)
    return wide


def stage_diffusion(run, cfg, tok, caps, mean, logvar, scale, masks=None, phase="diffusion", init=None):
    """Trains text encoder + UNet (fresh, or init=(unet, text)) for the phase's steps; returns
    them with the EMA weights. phase "inpaint" is the 9-channel fine-tune of --inpaint-steps."""
    a = run.args
    stage, total, base_lr, ema_decay = {
        "diffusion": (STAGE_DIFF, a.steps, a.lr, a.ema),
        "inpaint": (STAGE_INPAINT, a.inpaint_steps, a.inpaint_lr, a.inpaint_ema)}[phase]
    if init is None:
        torch.manual_seed(a.seed + 1)
        unet = models.unet_of(cfg)
        text = models.text_of(cfg)
    else:
        unet, text = init
    params = list(unet.parameters()) + list(text.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=base_lr, weight_decay=0.01)
    ck = os.path.join(run.wd, "ckpt", phase + ".pt")
    step = 0
    if os.path.exists(ck):
        st = torch.load(ck)
        unet.load_state_dict(st["unet"])
        text.load_state_dict(st["text"])
        opt.load_state_dict(st["opt"])
        ema = st["ema"]
        step = st["step"]
        run.log("%s: resumed at step %d" % (phase, step))
    ids = torch.tensor([tok.tokenize77(c) for c in caps], dtype=torch.long)
    # Users select a hole and name only what goes in it: some masked draws are captioned so.
    descs = ([dataset.sample(i, a.seed) for i in range(len(caps))]
             if masks is not None and a.object_caption_p > 0 else None)
    phrase_ids = {}   # a few hundred distinct object phrases: tokenized once each, not per step
    empty = torch.tensor(tok.tokenize77(""), dtype=torch.long)
    mean_t, std_t = torch.from_numpy(mean), torch.from_numpy(np.exp(0.5 * logvar))
    ac = models.sd_schedule()
    z_ch = cfg["z_ch"]
    bs = a.batch
    t_last_ck, t0, s0, loss_avg = time.time(), time.time(), step, None

    def checkpoint():
        save_ckpt(ck, {"unet": unet.state_dict(), "text": text.state_dict(), "opt": opt.state_dict(),
                       "ema": ema, "step": step})
        run.save_elapsed()

    while step < total and not run.stop:
        g, rng = gen(a.seed, stage, step)
        idx = torch.from_numpy(rng.integers(0, len(caps), bs))
        drop = torch.from_numpy(rng.random(bs) < a.uncond_p)
        x0 = (mean_t[idx] + std_t[idx] * torch.randn(mean_t[idx].shape, generator=g)) * scale
        t = torch.randint(0, 1000, (bs,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a_t = ac[t][:, None, None, None]
        xt = a_t.sqrt() * x0 + (1 - a_t).sqrt() * noise
        tid = ids[idx]
        for pg in opt.param_groups:
            pg["lr"] = lr_at(step, total, base_lr, 200)
        if masks is not None:
            extra, hidden = masked_input(masks, idx, g, rng, a.full_mask_p, scale)
            xt = torch.cat([xt, extra], dim=1)
            if descs is not None:
                own = (rng.random(bs) < a.object_caption_p) & (hidden.numpy() >= 0)
                say_where = rng.random(bs) < 0.5
                for j in np.flatnonzero(own):
                    d = descs[int(idx[j])]
                    phrase = dataset.object_phrase(d["objects"][int(hidden[j])],
                                                   bool(d["positioned"] and say_where[j]))
                    if phrase not in phrase_ids:
                        phrase_ids[phrase] = torch.tensor(tok.tokenize77(phrase), dtype=torch.long)
                    tid[j] = phrase_ids[phrase]
        tid = torch.where(drop[:, None], empty[None], tid)
        eps = unet(xt, t, text(tid))
        snr = (a_t / (1 - a_t)).expand(-1, 1, *x0.shape[2:])
        # Min-SNR weighting (Hang et al. 2023): the nearly clean timesteps, which teach only
        # fine detail, stop dominating the gradient; layout, colour and shape come sooner.
        w = snr.clamp(max=a.min_snr) / snr if a.min_snr > 0 else torch.ones_like(snr)
        if masks is not None:
            known = xt[:, z_ch:z_ch + 1] < 0.5
            # Where the masked picture shows x0, an eps error costs only SNR x the x0 error, so at
            # the high-noise steps (layout, background) the UNet gains almost nothing by reading
            # the masked latent and learns to ignore it. Weighting the known pixels up to an x0
            # loss (1/SNR, at most --known-weight) makes copying them worth learning.
            if a.known_weight > 0:
                w = torch.where(known, torch.maximum(w, (1 / snr).clamp(max=a.known_weight)), w)
            # Inside the hole the background is decided at the high-noise steps too, and when the
            # caption names only the hidden object it can come only from the masked picture
            # around the hole: the same x0 weighting there, for the partly masked samples.
            if a.hole_weight > 0:
                hole = ~known & known.flatten(1).any(1)[:, None, None, None]
                w = torch.where(hole, torch.maximum(w, (1 / snr).clamp(max=a.hole_weight)), w)
        loss = (w * (eps - noise).pow(2)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        loss_avg = loss.item() if loss_avg is None else 0.99 * loss_avg + 0.01 * loss.item()
        if step % a.log_every == 0 or step == total:
            per = (time.time() - t0) / (step - s0)
            run.log("%s: step %d/%d loss %.4f %.2f s/step ETA %.1f min" %
                    (phase, step, total, loss_avg, per, per * (total - step) / 60))
        if time.time() - t_last_ck > a.ckpt_min * 60:
            checkpoint()
            t_last_ck = time.time()
        if run.over_budget():
            run.log("%s: wall budget reached at step %d; going on with these weights" % (phase, step))
            break
    if run.stop:
        checkpoint()
        raise SystemExit(0)
    checkpoint()
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    return unet, text


def main(argv=None):
    p = argparse.ArgumentParser(description="Train the default SD1-layout model (resumable).")
    p.add_argument("--workdir", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-images", type=int, default=30000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--config", default="{}", help="JSON overrides of models.DEFAULT_CONFIG")
    p.add_argument("--vae-steps", type=int, default=2000)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-kl", type=float, default=1e-6)
    p.add_argument("--vae-object-weight", type=float, default=9.0,
                   help="extra VAE loss weight on object pixels (0 = every pixel alike)")
    p.add_argument("--steps", type=int, default=4000, help="diffusion steps")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--uncond-p", type=float, default=0.1)
    p.add_argument("--full-mask-p", type=float, default=0.4,
                   help="9-channel UNet: share of samples with everything masked (text-to-image)")
    p.add_argument("--known-weight", type=float, default=0.0,
                   help="9-channel UNet: x0-space loss weight cap on the unmasked latent pixels (0 = off)")
    p.add_argument("--inpaint-steps", type=int, default=0,
                   help="after --steps, widen the plain UNet to 9 channels (new ones zero) and train "
                        "it this many steps with masked pictures (0 = stay plain)")
    p.add_argument("--inpaint-lr", type=float, default=2e-4)
    p.add_argument("--inpaint-ema", type=float, default=0.999,
                   help="EMA decay of the inpaint phase (its few steps want a shorter memory)")
    p.add_argument("--hole-weight", type=float, default=0.0,
                   help="9-channel UNet: x0-space loss weight cap inside the hole of partly masked "
                        "samples (0 = off)")
    p.add_argument("--object-caption-p", type=float, default=0.0,
                   help="masked draws whose hole hides an object: share captioned with only that object")
    p.add_argument("--min-snr", type=float, default=5.0,
                   help="min-SNR loss weighting gamma for the diffusion stage (0 = plain MSE)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ckpt-min", type=float, default=5.0)
    p.add_argument("--budget-min", type=float, default=0, help="wall-clock stop (0 = none)")
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    cfg = dict(models.DEFAULT_CONFIG)
    cfg["size"] = a.size
    cfg.update(json.loads(a.config))
    if a.inpaint_steps > 0 and models.unet_in_channels(cfg) != cfg["z_ch"]:
        raise SystemExit("--inpaint-steps widens a plain UNet: leave unet_in out of --config")
    masked_phase = a.inpaint_steps > 0 or models.unet_in_channels(cfg) == 9
    if (a.object_caption_p > 0 or a.known_weight > 0 or a.hole_weight > 0) and not masked_phase:
        raise SystemExit("--object-caption-p, --known-weight and --hole-weight need a 9-channel UNet "
                         "(--inpaint-steps, or unet_in 9 in --config)")
    run = Run(a)
    # A resumed run must have the same settings as the first start.
    settings = {k: v for k, v in vars(a).items() if k not in ("budget_min", "quiet", "log_every", "ckpt_min", "threads")}
    settings["config"] = cfg
    sp = os.path.join(run.wd, "settings.json")
    if os.path.exists(sp):
        with open(sp) as f:
            old = json.load(f)
        # A run started before an option existed ran as the option's OPTION_WAS value (or its
        # default, where the default keeps the old behaviour).
        new = json.loads(json.dumps(settings))
        for k in set(new) - set(old):
            old[k] = OPTION_WAS.get(k, p.get_default(k))
        if old != new:
            raise SystemExit("%s: the work folder was started with other settings: %s" % (sp, old))
    else:
        with open(sp, "w") as f:
            json.dump(settings, f, indent=1)

    def on_signal(signum, frame):
        run.stop = True
        run.log("signal %d: checkpointing and stopping" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    final = os.path.join(run.wd, "final.pt")
    if os.path.exists(final):
        run.log("already trained: %s" % final)
        return 0
    run.log("start: %s" % json.dumps(settings))
    imgs, caps, tok = stage_data(run, cfg)
    cfg["vocab"] = len(tok)
    vae = stage_vae(run, cfg, imgs)
    mean, logvar, scale = stage_latents(run, vae, imgs)
    masks = stage_masks(run, cfg, vae, imgs) if masked_phase else None
    if a.inpaint_steps > 0:
        unet, text = stage_diffusion(run, cfg, tok, caps, mean, logvar, scale)
        cfg = dict(cfg, unet_in=9)
        unet, text = stage_diffusion(run, cfg, tok, caps, mean, logvar, scale, masks, "inpaint",
                                     (widened_unet(unet, cfg), text))
    else:
        unet, text = stage_diffusion(run, cfg, tok, caps, mean, logvar, scale, masks)
    sd = {k: v.clone() for k, v in models.sd1_state_dict(unet, vae, text).items()}
    save_ckpt(final, {"state_dict": sd, "config": cfg, "scale_factor": scale,
                      "elapsed_min": run.elapsed() / 60, "settings": settings})
    run.save_elapsed()
    run.log("done: %s (%.1f min in all)" % (final, run.elapsed() / 60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
