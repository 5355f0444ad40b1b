"""Generated bad inputs: image files (valid in odd modes, truncated, lying headers, random bytes)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from hypothesis import strategies as st
from PIL import Image

MAGICS = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"RIFF\x00\x00\x00\x00WEBP"]
MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "I", "I;16", "F", "CMYK"]
FORMATS = ["PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP"]


def _encode(mode: str, size: tuple[int, int], fmt: str, seed: int, special: str) -> bytes | None:
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "F":
        values = rng.random((size[1], size[0]), dtype=np.float32) * (255.0 if special == "wide" else 1.0)
        if special == "nan":
            values[0, 0] = np.nan
        if special == "inf":
            values[-1, -1] = np.inf
        image = Image.fromarray(values, mode="F")
    elif mode in ("I", "I;16"):
        image = Image.fromarray(rng.integers(0, 65535, (size[1], size[0]), dtype=np.int32), mode="I").convert(mode)
    else:
        image = base.convert(mode)
    buffer = io.BytesIO()
    try:
        if special == "exif" and fmt in ("JPEG", "PNG", "TIFF", "WEBP"):
            exif = Image.Exif()
            exif[0x0112] = int(rng.integers(0, 10))  # orientation, valid or not
            image.save(buffer, fmt, exif=exif)
        else:
            image.save(buffer, fmt)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # this format cannot hold this mode
    return buffer.getvalue()


def _declaring(data: bytes, width: int, height: int) -> bytes:
    """``data`` with its header rewritten to declare width x height (JPEG SOF or PNG IHDR, CRC fixed)."""
    blob = bytearray(data)
    if blob[:2] == b"\xff\xd8" and b"\xff\xc0" in blob:
        sof = blob.index(b"\xff\xc0")
        blob[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    elif blob[:8] == b"\x89PNG\r\n\x1a\n":
        blob[16:24] = struct.pack(">II", width, height)
        blob[29:33] = struct.pack(">I", zlib.crc32(bytes(blob[12:29])))
    return bytes(blob)


@st.composite
def image_bytes(draw) -> bytes:
    """One file's bytes, as a hostile or unlucky user might hand it over."""
    kind = draw(st.sampled_from(["valid", "truncated", "declared", "random", "flipped"]))
    if kind == "random":
        return draw(st.sampled_from(MAGICS)) + draw(st.binary(max_size=600))
    mode, fmt = draw(st.sampled_from(MODES)), draw(st.sampled_from(FORMATS))
    size = (draw(st.integers(1, 80)), draw(st.integers(1, 80)))
    special = draw(st.sampled_from(["", "", "nan", "inf", "wide", "exif"]))
    data = _encode(mode, size, fmt, draw(st.integers(0, 2**16)), special)
    if data is None:
        data = _encode("RGB", size, "PNG", 0, "")
        assert data is not None
    if kind == "truncated":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if kind == "declared":
        sides = st.sampled_from([1, 2, 7, 300, 4000, 20000, 65500])
        return _declaring(data, draw(sides), draw(sides))
    if kind == "flipped":
        position = draw(st.integers(0, len(data) - 1))
        blob = bytearray(data)
        blob[position] ^= draw(st.integers(1, 255))
        return bytes(blob)
    return data
