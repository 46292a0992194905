"""export.py - writes a trained run (WORKDIR/final.pt) as the engine's single-file checkpoint:
OUT/sdg-default.safetensors (every float tensor fp16, SD1 single-file names, metadata
sdg.native_size and sdg.scale_factor plus a short description) and OUT/vocab.json + merges.txt.

Not here: training (train.py), the model card text (MODEL_CARD.md is written by hand from the
run's numbers).
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch

from . import safetensors_io


def export(workdir, out_dir, name="sdg-default.safetensors"):
    st = torch.load(os.path.join(workdir, "final.pt"))
    cfg = st["config"]
    tensors = {}
    for k, v in st["state_dict"].items():
        a = v.detach().cpu().numpy()
        tensors[k] = a.astype(np.float16) if a.dtype.kind == "f" else a
    meta = {
        "sdg.native_size": str(cfg["size"]),
        "sdg.scale_factor": "%.6g" % st["scale_factor"],
        "sdg.description": "GIMP Diffusion default model: procedural shapes (tools/sdg_train)",
        "sdg.config": json.dumps(cfg, sort_keys=True),
        "sdg.training_minutes": "%.1f" % st.get("elapsed_min", 0.0),
    }
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    safetensors_io.write(path, tensors, meta)
    for f in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(workdir, "vocab", f), os.path.join(out_dir, f + ".tmp"))
        os.replace(os.path.join(out_dir, f + ".tmp"), os.path.join(out_dir, f))
    return path, os.path.getsize(path)


def main(argv=None):
    p = argparse.ArgumentParser(description="Export a trained run to safetensors (fp16).")
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", required=True, help="output folder")
    a = p.parse_args(argv)
    path, size = export(a.workdir, a.out)
    print("%s: %.2f MB" % (path, size / 1e6))
    return 0


if __name__ == "__main__":
    sys.exit(main())
