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
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from . import bpe, dataset, pngio

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

    def classify(self, img, within=None):
        """(colour, shape) of the object region of img (restricted to the bool mask `within`),
        or (None, None) when there is no object."""
        mask = region(img)
        if within is not None:
            mask &= within
        return self._classify_region(img, mask)

    def _classify_region(self, img, mask):
        f = features(mask)
        if f is None:
            return None, None
        med = np.median(img.reshape(-1, 3)[mask.reshape(-1)].astype(np.float64), axis=0)
        colour = OBJ_COLOURS[int(np.argmin(np.linalg.norm(PALETTE - med, axis=1)))]
        z = (f - self.mu) / self.sd
        shape = min(self.centroids, key=lambda s: np.linalg.norm(z - self.centroids[s]))
        return colour, shape

    def score(self, img, obj):
        """(colour ok, shape ok, position ok, predicted (colour, shape, cell) or None)."""
        mask = region(img)
        colour, shape = self._classify_region(img, mask)
        if colour is None:
            return False, False, False, None
        cell = cell_of(mask)
        return colour == obj["colour"], shape == obj["shape"], cell == obj["cell"], (colour, shape, cell)


def vae_reconstructions(m, descs, size):
    """The VAE of m (models.SD1) decoding the posterior mean of each description's render: what
    the diffusion model could draw at best, scored like its pictures."""
    import torch
    x = torch.from_numpy(np.stack([dataset.render(d, size) for d in descs])).permute(0, 3, 1, 2)
    with torch.no_grad():
        y = m.vae.decode(m.vae.encode(x.float() / 127.5 - 1.0)[0])
    return np.clip(np.rint((y.permute(0, 2, 3, 1).numpy() + 1.0) * 127.5), 0, 255).astype(np.uint8)


def generate(sdg, model, caption, seed, n, cfg, size, steps, out_dir, tag, init=None, mask=None,
             strength=None, blend=True):
    """n pictures from the CLI (seeds seed..seed+n-1); init/mask: PNG paths for img2img/inpaint.
    One thread: generate_all runs several of these at once, which also overlaps the CLI's start-up
    (GEGL's initialisation takes longer than 64x64 pictures)."""
    pattern = os.path.join(out_dir, "%s-%%d.png" % tag)
    cmd = [sdg, "-m", model, "-p", caption, "-W", str(size), "-H", str(size), "--steps", str(steps),
           "--cfg-scale", str(cfg), "-s", str(seed), "-b", str(n), "--sampler", "euler", "-q",
           "-t", "1", "-o", pattern]
    if init:
        cmd += ["-i", init]
    if mask:
        cmd += ["--mask", mask]
    if strength is not None:
        cmd += ["--strength", str(strength)]
    if not blend:
        cmd += ["--no-inpaint-blend"]
    subprocess.run(cmd, check=True)
    return [pngio.read_png(pattern.replace("%d", str(i + 1))) for i in range(n)]


JOBS = 2   # CLI processes at once (--jobs)


def generate_all(calls):
    """generate(*args, **kwargs) for each (args, kwargs) of calls, JOBS at a time; the results in
    the order of calls."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=JOBS) as pool:
        futures = [pool.submit(generate, *args, **kwargs) for args, kwargs in calls]
        return [f.result() for f in futures]


def moved_cell(cell):
    """The cell an image-to-image prompt moves the object to: the mirror cell, centre -> top left."""
    return (0, 0) if cell == (1, 1) else (2 - cell[0], 2 - cell[1])


def eval_img2img(a, sdg, scorer, descs, tmp):
    """Image-to-image from each held-out picture with a prompt that moves its object: at low
    strength the object should stay in its cell (layout kept), at high strength go to the cell the
    prompt names. Rows: strength -> (in source cell, in prompt's cell, mean abs pixel change)."""
    rows = {}
    srcs, targets = [], []
    for i, d in enumerate(descs):
        srcs.append(dataset.render(d, a.size))
        pngio.write_png(os.path.join(tmp, "src%d.png" % i), srcs[-1])
        obj = d["objects"][0]
        targets.append(dict(d, objects=[dict(obj, cell=moved_cell(obj["cell"]))]))
    for k, strength in enumerate(a.strengths):
        kept = moved = 0
        change = []
        results = generate_all(
            [((sdg, a.model, dataset.caption_of(targets[i]), a.seed, a.seeds, a.cfg[0], a.size,
               a.steps, tmp, "i%d-%d" % (k, i)),
              dict(init=os.path.join(tmp, "src%d.png" % i), strength=strength))
             for i in range(len(descs))])
        for d, src, target, imgs in zip(descs, srcs, targets, results):
            obj = d["objects"][0]
            for im in imgs:
                mask = region(im)
                if features(mask) is not None:
                    cell = cell_of(mask)
                    kept += cell == obj["cell"]
                    moved += cell == target["objects"][0]["cell"]
                change.append(np.abs(im.astype(np.float64) - src).mean())
        n = len(descs) * a.seeds
        rows[strength] = (kept / n, moved / n, float(np.mean(change)))
    return rows


def inpaint_box(cell, size):
    """The selection for inpainting: the square around a cell's centre, 0.44 of the side."""
    half = int(round(0.22 * size))
    cx, cy = (int(round(dataset.CELL_CENTRE[c] * size)) for c in cell)
    box = np.zeros((size, size), dtype=bool)
    box[max(0, cy - half):cy + half, max(0, cx - half):cx + half] = True
    return box


def box_seam(im, box, width=3):
    """How far the background filled into a rectangular box is from the one around it: the largest
    per-channel difference (0-255) between the median colours of the box's inner and outer rims of
    `width` pixels (the object is drawn away from the rims)."""
    ys, xs = np.nonzero(box)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    core = np.zeros_like(box)
    core[y0 + width:y1 - width, x0 + width:x1 - width] = True
    grown = np.zeros_like(box)
    grown[max(0, y0 - width):y1 + width, max(0, x0 - width):x1 + width] = True
    inner, outer = box & ~core, grown & ~box
    return float(np.abs(np.median(im[inner], axis=0) - np.median(im[outer], axis=0)).max())



def eval_inpaint(a, sdg, scorer, descs, tmp, prompt="a green star", positioned=False, blend=True):
    """Inpaint a box in an empty cell of each held-out picture with `prompt` (+ the box's position
    when positioned; blend: the CLI's default, else --no-inpaint-blend): is there a green,
    star-shaped object inside the box, is every pixel outside it unchanged, and is the box's
    background the one around it? Returns (green, star, green star, outside max abs change, mean
    box_seam, pictures)."""
    green = star = both = 0
    outside = 0.0
    seams = []
    pictures = []
    calls, inputs = [], []
    for i, d in enumerate(descs):
        cell = moved_cell(d["objects"][0]["cell"])
        src = dataset.render(d, a.size)
        box = inpaint_box(cell, a.size)
        src_path, mask_path = os.path.join(tmp, "ip%d.png" % i), os.path.join(tmp, "ipm%d.png" % i)
        pngio.write_png(src_path, src)
        pngio.write_png(mask_path, np.where(box, 255, 0).astype(np.uint8))
        cap = prompt + (" " + dataset.POSITIONS[cell] if positioned else "")
        calls.append(((sdg, a.model, cap, a.seed, a.seeds, a.cfg[0], a.size, a.steps, tmp,
                       "p%d%d-%d" % (positioned, blend, i)),
                      dict(init=src_path, mask=mask_path, strength=1.0, blend=blend)))
        inputs.append((src, box))
    for (src, box), imgs in zip(inputs, generate_all(calls)):
        for im in imgs:
            outside = max(outside, float(np.abs(im.astype(np.int32) - src)[~box].max()))
            seams.append(box_seam(im.astype(np.float64), box))
            c, s = scorer.classify(im, box)
            green += c == "green"
            star += s == "star"
            both += c == "green" and s == "star"
        pictures.append((src, box, imgs))
    n = len(descs) * a.seeds
    return green / n, star / n, both / n, outside, float(np.mean(seams)), pictures


# The held-out captions test-default-model.c generates for (indices into heldout_descriptions):
# every colour and shape, most cells, both backgrounds.
TEST_CAPTIONS = [0, 2, 8, 9, 10, 13, 16, 17, 23, 26, 28, 35]
TOKEN_CASES = ["a red circle on the left", "", "A  Large, GREEN star!! at the top-right",
               "an orange ring on a purple to yellow gradient", "zebra 42 caf\u00e9 \u732b"]


def write_test_data(path, model, size):
    """tests/default-model-data.h: the scorer's shape calibration, the learned vocabulary's token
    ids (bpe.py) and the held-out captions (TEST_CAPTIONS) for test-default-model.c."""
    from . import models
    scorer = Scorer(size)
    tok = bpe.Tokenizer.load(os.path.dirname(os.path.abspath(model)))
    cfg = models.load_file(model)[1]

    def row(v):
        return "{" + ", ".join("%.9g" % x for x in v) + "}"
    lines = ["// Generated by tools/sdg_train (python3 -m sdg_train.evaluate --write-test-data); do not edit.",
             "// The shape scorer's calibration on the generator's renders (Scorer), the token ids",
             "// of the default model's vocabulary as bpe.py computes them, held-out captions, and",
             "// the layout of the model they were made for.",
             "static const int model_vae_factor = %d, model_unet_in = %d;" % (
                 models.vae_factor(cfg), models.unet_in_channels(cfg)),
             "static const double calib_mean[5] = %s;" % row(scorer.mu),
             "static const double calib_sd[5] = %s;" % row(scorer.sd),
             "static const double calib_centroid[5][5] = {"]
    lines += ["    %s, // %s" % (row(scorer.centroids[s]), s) for s in dataset.SHAPES]
    lines += ["};", "", "static const struct { const char *text; int32_t ids[77]; } token_cases[] = {"]
    for t in TOKEN_CASES:
        # JSON's \uXXXX escapes are C11 universal character names: UTF-8 in a char literal.
        lines.append("    {%s, %s}," % (json.dumps(t, ensure_ascii=True), row(tok.tokenize77(t))))
    lines += ["};", "", "static const caption heldout[] = {"]
    descs = dataset.heldout_descriptions()
    for i in TEST_CAPTIONS:
        o = descs[i]["objects"][0]
        lines.append('    {"%s", "%s", "%s", %d, %d},' % (dataset.caption_of(descs[i]), o["colour"],
                                                        o["shape"], o["cell"][0], o["cell"][1]))
    lines.append("};")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def print_table(header, rows):
    """A Markdown table: header names, then rows of already formatted cells."""
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for r in rows:
        print("| " + " | ".join(r) + " |")


def main(argv=None):
    p = argparse.ArgumentParser(description="Score prompt following on held-out captions.")
    p.add_argument("--model", required=True, help="sdg-default.safetensors (vocab files beside it)")
    p.add_argument("--sdg", default=None, help="the sdg CLI (default: build/engine/cli/sdg)")
    p.add_argument("--seeds", type=int, default=4, help="pictures per caption")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--captions", type=int, default=0, help="use only the first N held-out captions")
    p.add_argument("--cfg", type=float, nargs="+", default=[5.0, 1.0],
                   help="text-to-image guidance scales; the first one is used for img2img/inpaint")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--strengths", type=float, nargs="*", default=[0.1, 0.2, 0.3, 0.5, 0.7, 0.9],
                   help="image-to-image strengths (none: skip image-to-image)")
    p.add_argument("--no-inpaint", action="store_true")
    p.add_argument("--jobs", type=int, default=2, help="CLI processes at once, one thread each")
    p.add_argument("--json", help="write the numbers here")
    p.add_argument("--grid", help="write a PNG grid (rows: captions, columns: seeds x cfg)")
    p.add_argument("--inpaint-grid", help="write a PNG grid of inpainting (source, mask, results)")
    p.add_argument("--write-test-data", metavar="HEADER",
                   help="only write tests/default-model-data.h (vocab files beside --model)")
    a = p.parse_args(argv)
    global JOBS
    JOBS = max(1, a.jobs)
    if a.write_test_data:
        write_test_data(a.write_test_data, a.model, a.size)
        return 0
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sdg = a.sdg or os.path.join(root, "build", "engine", "cli", "sdg")

    descs = dataset.heldout_descriptions()
    if a.captions:
        descs = descs[:a.captions]
    scorer = Scorer(a.size)
    rows = {}
    ref = np.array([scorer.score(dataset.render(d, a.size), d["objects"][0])[:3] for d in descs], dtype=float)
    rows["reference (ground-truth renders)"] = ref.mean(0)
    from . import models
    net, model_cfg, _ = models.load_file(a.model)
    rec = vae_reconstructions(net, descs, a.size)
    rows["the VAE's reconstructions of them"] = np.array(
        [scorer.score(im, d["objects"][0])[:3] for im, d in zip(rec, descs)], dtype=float).mean(0)
    grid_imgs = {}
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in a.cfg:
            res = []
            results = generate_all([((sdg, a.model, dataset.caption_of(d), a.seed, a.seeds, cfg, a.size,
                                      a.steps, tmp, "c%g-%d" % (cfg, i)), {})
                                    for i, d in enumerate(descs)])
            for i, (d, imgs) in enumerate(zip(descs, results)):
                grid_imgs[(i, cfg)] = imgs
                for im in imgs:
                    res.append(scorer.score(im, d["objects"][0])[:3])
            rows["CFG %g" % cfg] = np.array(res, dtype=float).mean(0)
        i2i = eval_img2img(a, sdg, scorer, descs, tmp) if a.strengths else {}
        # Inpainting rows: (label, key in the json, positioned, blend). A 9-channel model also
        # without the known-region blend, as diffusers inpaints with it.
        inp_rows = [("a green star", "plain", False, True),
                    ("a green star + the box's position", "positioned", True, True)]
        if models.unet_in_channels(model_cfg) == 9:
            inp_rows.append(("a green star, --no-inpaint-blend", "plain_no_blend", False, False))
        inp = {}
        if not a.no_inpaint:
            for label, key, positioned, blend in inp_rows:
                inp[key] = (label, eval_inpaint(a, sdg, scorer, descs, tmp, positioned=positioned,
                                                blend=blend))
    rows["random guess"] = np.array([1 / 8, 1 / 5, 1 / 9])

    n = len(descs)
    print("Text to image: %d held-out captions x %d seeds, %dx%d, %d euler steps"
          % (n, a.seeds, a.size, a.size, a.steps))
    print()
    print_table(["pictures", "colour", "shape", "position"],
                [[k] + ["%.2f" % x for x in v] for k, v in rows.items()])
    report["text_to_image"] = {k: dict(zip(["colour", "shape", "position"], map(float, v)))
                               for k, v in rows.items()}
    if i2i:
        print()
        print("Image to image: each held-out picture with a prompt that moves its object to the mirror "
              "cell (CFG %g); random guess 1/9 for either cell" % a.cfg[0])
        print()
        print_table(["strength", "object stays in its cell", "object in the prompt's cell",
                     "mean abs change (0-255)"],
                    [["%.2f" % st, "%.2f" % kept, "%.2f" % moved, "%.1f" % change]
                     for st, (kept, moved, change) in i2i.items()])
        report["image_to_image"] = {"%.2f" % st: dict(kept=v[0], moved=v[1], change=v[2])
                                    for st, v in i2i.items()}
    if inp:
        print()
        print("Inpainting: a box (0.44 of the side) in an empty cell of each held-out picture, "
              "CFG %g; random guess 1/8 colour, 1/5 shape" % a.cfg[0])
        print()
        print_table(["prompt", "green inside", "star inside", "green star", "max change outside",
                     "seam (0-255)"],
                    [[label, "%.2f" % v[0], "%.2f" % v[1], "%.2f" % v[2], "%g" % v[3], "%.1f" % v[4]]
                     for label, v in inp.values()])
        print()
        print("seam: the background at the box's inner rim against the one around it, the largest "
              "per-channel difference of their median colours, mean over the pictures")
        report["inpaint"] = {k: dict(green=v[0], star=v[1], green_star=v[2], outside_max_change=v[3],
                                     seam=v[4])
                             for k, (label, v) in inp.items()}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
    if a.grid:
        tiles = []
        for i, d in enumerate(descs):
            tiles.append(dataset.render(d, a.size))
            for cfg in a.cfg:
                tiles += grid_imgs[(i, cfg)]
        pngio.write_png(a.grid, pngio.grid(tiles, 1 + a.seeds * len(a.cfg)))
    if a.inpaint_grid and inp:
        tiles = []
        for src, box, imgs in inp["plain"][1][5]:
            shown = src.copy()
            shown[box] = (shown[box] * 0.5 + np.array([255, 0, 255]) * 0.5).astype(np.uint8)
            tiles += [src, shown] + imgs
        pngio.write_png(a.inpaint_grid, pngio.grid(tiles, 2 + a.seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
