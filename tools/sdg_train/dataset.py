"""dataset.py - the procedural captioned picture set: coloured shapes (circle, square, triangle,
star, ring) at named positions and sizes on solid or gradient backgrounds, one or two objects.

Every picture is a pure function of (seed, index): `sample(i, rng_seed)` draws its description
with numpy's PCG64 seeded by (seed, i), and `render` draws it with analytic antialiasing (pixel
coverage from a signed distance, no supersampling), so the set is reproducible bit for bit.

Held-out captions: a fixed tenth of the (colour, shape, position) triples never appears in a
training caption, not even as one of two objects; `heldout_captions()` lists the evaluation
captions built from them.

Not here: tokenization (bpe.py), tensors or training (train.py), scoring (evaluate.py).
"""
import math

import numpy as np

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 225),
    "yellow": (240, 215, 30),
    "orange": (245, 135, 20),
    "purple": (135, 45, 180),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
# Background colours: the object colours plus gray (objects are never gray, so a gray background
# always contrasts).
BACKGROUNDS = dict(COLOURS, gray=(128, 128, 128))
SHAPES = ["circle", "square", "triangle", "star", "ring"]
# 3x3 grid cells (column, row) -> phrase.
POSITIONS = {
    (0, 0): "at the top left", (1, 0): "at the top", (2, 0): "at the top right",
    (0, 1): "on the left", (1, 1): "in the center", (2, 1): "on the right",
    (0, 2): "at the bottom left", (1, 2): "at the bottom", (2, 2): "at the bottom right",
}
CELLS = list(POSITIONS.keys())
CELL_CENTRE = (0.22, 0.5, 0.78)         # fraction of the side, per column / row
SIZES = {"small": 0.10, "": 0.145, "large": 0.18}  # radius as a fraction of the side

HELDOUT_SEED = 1234
HELDOUT_FRACTION = 0.1


def _all_triples():
    return [(c, s, cell) for c in COLOURS for s in SHAPES for cell in CELLS]


def heldout_triples():
    """The (colour, shape, cell) triples kept out of training (fixed seed, ~10%)."""
    triples = _all_triples()
    rng = np.random.Generator(np.random.PCG64(HELDOUT_SEED))
    idx = rng.permutation(len(triples))[: int(round(HELDOUT_FRACTION * len(triples)))]
    return sorted(triples[i] for i in idx)


_HELDOUT = None


def is_heldout(colour, shape, cell):
    global _HELDOUT
    if _HELDOUT is None:
        _HELDOUT = set(heldout_triples())
    return (colour, shape, cell) in _HELDOUT


def _eval_background(colour):
    # A solid background that contrasts with the object: white, except for light objects.
    return "gray" if colour in ("white", "yellow") else "white"


def object_phrase(obj, with_position=True):
    words = []
    if obj["size"]:
        words.append(obj["size"])
    words += [obj["colour"], obj["shape"]]
    words.insert(0, "an" if words[0][0] in "aeiou" else "a")
    if with_position:
        words.append(POSITIONS[obj["cell"]])
    return " ".join(words)


def caption_of(desc):
    parts = [object_phrase(o, desc["positioned"]) for o in desc["objects"]]
    cap = " and ".join(parts)
    bg = desc["background"]
    if desc["say_background"]:
        if bg["kind"] == "solid":
            c = bg["colours"][0]
            cap += " on %s %s background" % ("an" if c[0] in "aeiou" else "a", c)
        else:
            c = bg["colours"]
            cap += " on %s %s to %s gradient" % ("an" if c[0][0] in "aeiou" else "a", c[0], c[1])
    return cap


def heldout_descriptions():
    """One evaluation description per held-out triple: medium size, a stated solid background."""
    out = []
    for colour, shape, cell in heldout_triples():
        obj = dict(colour=colour, shape=shape, cell=cell, size="", jitter=(0.0, 0.0),
                   scale=1.0, angle=0.0)
        desc = dict(objects=[obj], positioned=True, say_background=True,
                    background=dict(kind="solid", colours=[_eval_background(colour)]))
        out.append(desc)
    return out


def heldout_captions():
    return [caption_of(d) for d in heldout_descriptions()]


def sample(index, seed=0):
    """The description of training picture `index` (a dict; see caption_of/render)."""
    rng = np.random.Generator(np.random.PCG64([seed, index]))
    n_obj = 2 if rng.random() < 0.3 else 1
    positioned = n_obj == 2 or rng.random() < 0.85
    for _attempt in range(100):
        objs = []
        cells = [CELLS[j] for j in rng.permutation(9)[:n_obj]]
        for k in range(n_obj):
            colour = list(COLOURS)[rng.integers(len(COLOURS))]
            shape = SHAPES[rng.integers(len(SHAPES))]
            sizes = ["small", ""] if n_obj == 2 else list(SIZES)
            size = sizes[rng.integers(len(sizes))]
            objs.append(dict(colour=colour, shape=shape, cell=cells[k], size=size,
                             jitter=tuple(rng.uniform(-0.05, 0.05, 2)),
                             scale=float(rng.uniform(0.9, 1.1)),
                             angle=float(rng.uniform(-0.25, 0.25))))
        if any(is_heldout(o["colour"], o["shape"], o["cell"]) for o in objs):
            continue
        if n_obj == 2 and (objs[0]["colour"] == objs[1]["colour"] and
                           objs[0]["shape"] == objs[1]["shape"]):
            continue
        break
    used = {o["colour"] for o in objs}
    bg_names = [b for b in BACKGROUNDS if b not in used]
    if rng.random() < 0.7:
        bg = dict(kind="solid", colours=[bg_names[rng.integers(len(bg_names))]])
    else:
        j = rng.permutation(len(bg_names))[:2]
        bg = dict(kind="gradient", colours=[bg_names[j[0]], bg_names[j[1]]],
                  direction=int(rng.integers(2)))
    say_bg = rng.random() < 0.6
    return dict(objects=objs, positioned=positioned, say_background=say_bg, background=bg)


# ---------------------------------------------------------------------------------------------
# Rendering: signed distances in pixels, coverage = clip(0.5 - d, 0, 1).

def _sd_box(px, py, b):
    qx, qy = np.abs(px) - b, np.abs(py) - b
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _sd_polygon(px, py, verts):
    # Exact signed distance to a simple polygon (winding by crossing count).
    n = len(verts)
    d = np.full(px.shape, np.inf)
    inside = np.zeros(px.shape, dtype=bool)
    for i in range(n):
        ax, ay = verts[i]
        bx, by = verts[(i + 1) % n]
        ex, ey = bx - ax, by - ay
        wx, wy = px - ax, py - ay
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0, 1)
        d = np.minimum(d, np.hypot(wx - ex * t, wy - ey * t))
        cond = ((ay <= py) & (py < by)) | ((by <= py) & (py < ay))
        xcross = ax + (py - ay) * ex / np.where(ey == 0, 1e-12, ey)
        inside ^= cond & (px < xcross)
    return np.where(inside, -d, d)


def _shape_sd(shape, px, py, r, angle):
    ca, sa = math.cos(angle), math.sin(angle)
    # Rotate the sampling point, not the shape.
    qx, qy = ca * px + sa * py, -sa * px + ca * py
    if shape == "circle":
        return np.hypot(px, py) - r
    if shape == "ring":
        return np.abs(np.hypot(px, py) - 0.75 * r) - 0.25 * r
    if shape == "square":
        return _sd_box(qx, qy, 0.85 * r)
    if shape == "triangle":
        # Pointing up (image y grows downwards), centroid at the origin.
        verts = [(0.0, -r * 1.1), (r * 1.1 * math.sin(2 * math.pi / 3), r * 0.55),
                 (-r * 1.1 * math.sin(2 * math.pi / 3), r * 0.55)]
        return _sd_polygon(qx, qy, verts)
    if shape == "star":
        verts = []
        for k in range(10):
            rad = 1.15 * r if k % 2 == 0 else 0.47 * r
            a = -math.pi / 2 + k * math.pi / 5
            verts.append((rad * math.cos(a), rad * math.sin(a)))
        return _sd_polygon(qx, qy, verts)
    raise ValueError(shape)


def render(desc, size):
    """The picture of a description: uint8 [size, size, 3]."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    bg = desc["background"]
    if bg["kind"] == "solid":
        img = np.empty((size, size, 3))
        img[:] = BACKGROUNDS[bg["colours"][0]]
    else:
        a = np.array(BACKGROUNDS[bg["colours"][0]], dtype=np.float64)
        b = np.array(BACKGROUNDS[bg["colours"][1]], dtype=np.float64)
        t = (xs if bg["direction"] == 0 else ys) / size
        img = a * (1 - t[..., None]) + b * t[..., None]
    for o in desc["objects"]:
        cx = (CELL_CENTRE[o["cell"][0]] + o["jitter"][0]) * size
        cy = (CELL_CENTRE[o["cell"][1]] + o["jitter"][1]) * size
        r = SIZES[o["size"]] * o["scale"] * size
        d = _shape_sd(o["shape"], xs - cx, ys - cy, r, o["angle"])
        cov = np.clip(0.5 - d, 0, 1)[..., None]
        img = img * (1 - cov) + np.array(COLOURS[o["colour"]], dtype=np.float64) * cov
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def object_mask(obj, size, grow=0.0):
    """Coverage [size,size] in [0,1] of one object as drawn, grown by `grow` pixels."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    cx = (CELL_CENTRE[obj["cell"][0]] + obj["jitter"][0]) * size
    cy = (CELL_CENTRE[obj["cell"][1]] + obj["jitter"][1]) * size
    r = SIZES[obj["size"]] * obj["scale"] * size
    return np.clip(0.5 + grow - _shape_sd(obj["shape"], xs - cx, ys - cy, r, obj["angle"]), 0, 1)


def objects_mask(desc, size, grow=0.0):
    """Coverage of all of a picture's objects (object_mask of each, maximum)."""
    return np.max([object_mask(o, size, grow) for o in desc["objects"]], axis=0)


def training_mask(desc, size, rng):
    """A selection to inpaint in training: (bool [size, size], the index in desc["objects"] of the
    object it was drawn around, or -1). A rectangle or an ellipse, in 60% of the draws around one
    of the picture's objects (so the model learns to draw the object its caption names into a hole
    that hides it), otherwise anywhere, of any size a user selects."""
    hidden = -1
    if rng.random() < 0.6:
        hidden = int(rng.integers(len(desc["objects"])))
        o = desc["objects"][hidden]
        r = SIZES[o["size"]] * o["scale"] * size
        cx = (CELL_CENTRE[o["cell"][0]] + o["jitter"][0]) * size + rng.uniform(-0.3, 0.3) * r
        cy = (CELL_CENTRE[o["cell"][1]] + o["jitter"][1]) * size + rng.uniform(-0.3, 0.3) * r
        hw, hh = r * rng.uniform(1.3, 2.4, 2)
    else:
        cx, cy = rng.uniform(0, size, 2)
        hw, hh = rng.uniform(0.08, 0.4, 2) * size
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    if rng.random() < 0.5:
        return (np.abs(xs - cx) <= hw) & (np.abs(ys - cy) <= hh), hidden
    return ((xs - cx) / hw) ** 2 + ((ys - cy) / hh) ** 2 <= 1.0, hidden


def build(n, size, seed=0):
    """n pictures and captions: (uint8 [n,size,size,3], list of str)."""
    imgs = np.empty((n, size, size, 3), dtype=np.uint8)
    caps = []
    for i in range(n):
        d = sample(i, seed)
        imgs[i] = render(d, size)
        caps.append(caption_of(d))
    return imgs, caps


def save_ppm(path, img):
    h, w, _ = img.shape
    with open(path, "wb") as f:
        f.write(b"P6\n%d %d\n255\n" % (w, h))
        f.write(np.ascontiguousarray(img, dtype=np.uint8).tobytes())


if __name__ == "__main__":
    import argparse
    import os
    import time
    p = argparse.ArgumentParser(description="Build the procedural picture set (npz).")
    p.add_argument("--out", required=True)
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ppm-dir", help="also write the first 32 pictures as PPM files here")
    a = p.parse_args()
    t0 = time.time()
    imgs, caps = build(a.n, a.size, a.seed)
    tmp = a.out + ".tmp.npz"
    np.savez(tmp, images=imgs, captions=np.array(caps))
    os.replace(tmp, a.out)
    print("%d pictures in %.1f s -> %s" % (a.n, time.time() - t0, a.out))
    if a.ppm_dir:
        os.makedirs(a.ppm_dir, exist_ok=True)
        for i in range(min(32, a.n)):
            save_ppm(os.path.join(a.ppm_dir, "%03d.ppm" % i), imgs[i])
            print(i, caps[i])
