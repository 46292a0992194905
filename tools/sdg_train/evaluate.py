"""evaluate.py - does the model follow prompts? Generates pictures for the held-out captions with
OUR engine (the sdg CLI) and scores them with simple image measures, against random guessing.

Measures (per picture; the caption names one object and a solid background colour):
  region    background = median colour of the 2-pixel border; object = pixels farther than 60
            (RGB distance, 0..255 scale) from it. Fewer than 12 such pixels: no object (all wrong).
  colour    median colour of the region -> the nearest of the 8 object colours.   baseline 1/8
  position  region centroid -> cell of the 3x3 grid (thirds of each side).        baseline 1/9
  shape     region moments: fill (area / bounding-box area), hole fraction (filled-in area vs
            area), boundary length^2 / area, normalised second moment (eta20+eta02) and the
            centroid's vertical offset in the box -> the nearest shape centroid (standardised
            features) calibrated on the generator's own renders.                    baseline 1/5
The same scorer is run on the generator's ground-truth pictures of the held-out captions
("reference" row): it says how far the measures themselves can be trusted.

Not here: training, the CLI itself. Needs the built CLI (build/engine/cli/sdg or --sdg).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from . import dataset, pngio

OBJ_COLOURS = list(dataset.COLOURS)
PALETTE = np.array([dataset.COLOURS[c] for c in OBJ_COLOURS], dtype=np.float64)


def region(img):
    img = img.astype(np.float64)
    border = np.concatenate([img[:2].reshape(-1, 3), img[-2:].reshape(-1, 3),
                             img[:, :2].reshape(-1, 3), img[:, -2:].reshape(-1, 3)])
    bg = np.median(border, axis=0)
    return np.linalg.norm(img - bg, axis=2) > 60


def _fill_holes(mask):
    # Background reachable from the border by 4-steps through non-mask pixels; the rest is filled.
    outside = np.zeros_like(mask)
    outside[0, :], outside[-1, :], outside[:, 0], outside[:, -1] = ~mask[0, :], ~mask[-1, :], ~mask[:, 0], ~mask[:, -1]
    while True:
        grown = outside.copy()
        grown[1:] |= outside[:-1]
        grown[:-1] |= outside[1:]
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown &= ~mask
        if (grown == outside).all():
            return ~outside
        outside = grown


def features(mask):
    area = mask.sum()
    if area < 12:
        return None
    ys, xs = np.nonzero(mask)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    filled = _fill_holes(mask)
    farea = filled.sum()
    fy, fx = np.nonzero(filled)
    cy, cx = fy.mean(), fx.mean()
    eta = (((fy - cy) ** 2).sum() + ((fx - cx) ** 2).sum()) / farea ** 2
    pad = np.pad(filled, 1)
    edge = filled & ~(pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:])
    return np.array([farea / (h * w), (farea - area) / farea, edge.sum() ** 2 / farea, eta,
                     (cy - (ys.min() + ys.max()) / 2) / h])


def cell_of(mask):
    ys, xs = np.nonzero(mask)
    n = mask.shape[0]
    return (min(2, int(xs.mean() * 3 / n)), min(2, int(ys.mean() * 3 / n)))


class Scorer:
    def __init__(self, size, n_calib=600, seed=99):
        feats = {s: [] for s in dataset.SHAPES}
        i = 0
        while sum(len(v) for v in feats.values()) < n_calib:
            d = dataset.sample(i, seed)
            i += 1
            if len(d["objects"]) != 1 or d["background"]["kind"] != "solid":
                continue
            f = features(region(dataset.render(d, size)))
            if f is not None:
                feats[d["objects"][0]["shape"]].append(f)
        allf = np.concatenate([np.array(v) for v in feats.values()])
        self.mu, self.sd = allf.mean(0), allf.std(0) + 1e-6
        self.centroids = {s: ((np.array(v) - self.mu) / self.sd).mean(0) for s, v in feats.items()}

    def score(self, img, obj):
        """(colour ok, shape ok, position ok, predicted (colour, shape, cell) or None)."""
        mask = region(img)
        f = features(mask)
        if f is None:
            return False, False, False, None
        med = np.median(img.reshape(-1, 3)[mask.reshape(-1)].astype(np.float64), axis=0)
        colour = OBJ_COLOURS[int(np.argmin(np.linalg.norm(PALETTE - med, axis=1)))]
        z = (f - self.mu) / self.sd
        shape = min(self.centroids, key=lambda s: np.linalg.norm(z - self.centroids[s]))
        cell = cell_of(mask)
        return colour == obj["colour"], shape == obj["shape"], cell == obj["cell"], (colour, shape, cell)


def generate(sdg, model, caption, seed, n, cfg, size, steps, out_dir, tag):
    pattern = os.path.join(out_dir, "%s-%%d.png" % tag)
    cmd = [sdg, "-m", model, "-p", caption, "-W", str(size), "-H", str(size), "--steps", str(steps),
           "--cfg-scale", str(cfg), "-s", str(seed), "-b", str(n), "--sampler", "euler", "-q",
           "-t", "2", "-o", pattern]
    subprocess.run(cmd, check=True)
    return [pngio.read_png(pattern.replace("%d", str(i + 1))) for i in range(n)]


def main(argv=None):
    p = argparse.ArgumentParser(description="Score prompt following on held-out captions.")
    p.add_argument("--model", required=True, help="sdg-default.safetensors (vocab files beside it)")
    p.add_argument("--sdg", default=None, help="the sdg CLI (default: build/engine/cli/sdg)")
    p.add_argument("--seeds", type=int, default=4, help="pictures per caption")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--captions", type=int, default=0, help="use only the first N held-out captions")
    p.add_argument("--cfg", type=float, nargs="+", default=[5.0, 1.0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--json", help="write the numbers here")
    p.add_argument("--grid", help="write a PNG grid (rows: captions, columns: seeds x cfg)")
    a = p.parse_args(argv)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sdg = a.sdg or os.path.join(root, "build", "engine", "cli", "sdg")

    descs = dataset.heldout_descriptions()
    if a.captions:
        descs = descs[:a.captions]
    scorer = Scorer(a.size)
    rows = {}
    ref = np.array([scorer.score(dataset.render(d, a.size), d["objects"][0])[:3] for d in descs], dtype=float)
    rows["reference (ground-truth renders)"] = ref.mean(0)
    grid_imgs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in a.cfg:
            res = []
            for i, d in enumerate(descs):
                cap = dataset.caption_of(d)
                imgs = generate(sdg, a.model, cap, a.seed, a.seeds, cfg, a.size, a.steps, tmp, "c%d" % i)
                grid_imgs[(i, cfg)] = imgs
                for im in imgs:
                    res.append(scorer.score(im, d["objects"][0])[:3])
            rows["CFG %g" % cfg] = np.array(res, dtype=float).mean(0)
    rows["random guess"] = np.array([1 / 8, 1 / 5, 1 / 9])

    n = len(descs)
    print("%d held-out captions x %d seeds, %dx%d, %d euler steps" % (n, a.seeds, a.size, a.size, a.steps))
    print("| measure | colour | shape | position |")
    print("| --- | --- | --- | --- |")
    for k, v in rows.items():
        print("| %s | %.2f | %.2f | %.2f |" % (k, v[0], v[1], v[2]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({k: dict(zip(["colour", "shape", "position"], map(float, v))) for k, v in rows.items()}, f, indent=1)
    if a.grid:
        tiles = []
        for i, d in enumerate(descs):
            tiles.append(dataset.render(d, a.size))
            for cfg in a.cfg:
                tiles += grid_imgs[(i, cfg)]
        pngio.write_png(a.grid, pngio.grid(tiles, 1 + a.seeds * len(a.cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
