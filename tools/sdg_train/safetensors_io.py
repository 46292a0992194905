"""safetensors_io.py - reading and writing .safetensors files with numpy (the safetensors package
is not in Debian). Format: 8-byte little-endian header length, a JSON header {name: {dtype,
shape, data_offsets}, "__metadata__": {str: str}}, then the raw little-endian tensor bytes.
"""
import json
import os

import numpy as np

_DT = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
       "U8": np.uint8}
_NAME = {np.dtype(v): k for k, v in _DT.items()}


def read(path):
    """(dict name -> numpy array, metadata dict). BF16 is widened to float32."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        base = 8 + n
        data = np.fromfile(f, dtype=np.uint8, offset=0)
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        raw = data[a:b]
        if info["dtype"] == "BF16":
            arr = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = raw.view(_DT[info["dtype"]])
        out[name] = arr.reshape(info["shape"]).copy()
    del base
    return out, meta


def write(path, tensors, metadata=None):
    """Writes name -> numpy array (written atomically: temp file, then rename)."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        raw = arr.tobytes()
        header[name] = {"dtype": _NAME[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(hj).to_bytes(8, "little"))
        f.write(hj)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)
