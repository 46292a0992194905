"""pngio.py - minimal PNG writing and reading with zlib and numpy (no PIL on the build machines).

Reads non-interlaced 8- or 16-bit grey, grey+alpha, RGB and RGBA files (what GEGL's png-save
writes); writes 8-bit RGB. Not here: palettes, interlacing, colour management.
"""
import struct
import zlib

import numpy as np


def write_png(path, img):
    img = np.ascontiguousarray(img, dtype=np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    h, w, c = img.shape
    assert c == 3
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data +
                struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 9)))
        f.write(chunk(b"IEND", b""))


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(path):
    """RGB uint8 [h, w, 3] (alpha dropped, 16-bit reduced to 8)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("%s: not a PNG file" % path)
    pos, idat, hdr = 8, [], None
    while pos < len(data):
        n, tag = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if tag == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat.append(body)
        elif tag == b"IEND":
            break
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = hdr
    if interlace or ctype not in (0, 2, 4, 6) or depth not in (8, 16):
        raise ValueError("%s: unsupported PNG (type %d, depth %d, interlace %d)" %
                         (path, ctype, depth, interlace))
    chans = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    bpp = chans * depth // 8
    stride = w * bpp
    raw = zlib.decompress(b"".join(idat))
    out = np.zeros((h, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(h):
        ft = raw[y * (stride + 1)]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=y * (stride + 1) + 1)
        line = line.astype(np.int32)
        if ft == 0:
            cur = line
        elif ft == 2:
            cur = (line + prev) & 255
        elif ft in (1, 3, 4):
            cur = np.zeros(stride, dtype=np.int32)
            for x in range(stride):
                a = cur[x - bpp] if x >= bpp else 0
                if ft == 1:
                    cur[x] = (line[x] + a) & 255
                elif ft == 3:
                    cur[x] = (line[x] + ((a + prev[x]) >> 1)) & 255
                else:
                    c = prev[x - bpp] if x >= bpp else 0
                    cur[x] = (line[x] + _paeth(a, prev[x], c)) & 255
        else:
            raise ValueError("%s: bad PNG filter %d" % (path, ft))
        out[y] = cur
        prev = cur
    px = out.reshape(h, w, bpp)
    if depth == 16:
        px = px.reshape(h, w, chans, 2)[..., 0]
    else:
        px = px.reshape(h, w, chans)
    if chans in (1, 2):
        return np.repeat(px[..., :1], 3, axis=2)
    return np.ascontiguousarray(px[..., :3])


def grid(images, cols, pad=2, value=255):
    """Tiles equal-size RGB uint8 pictures into one picture."""
    n = len(images)
    h, w, _ = images[0].shape
    rows = (n + cols - 1) // cols
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), value, dtype=np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = im
    return out
