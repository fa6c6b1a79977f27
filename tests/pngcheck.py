"""Checks that a file is a valid PNG image, with the standard library and Pillow."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG; fails unless every chunk's CRC is right and the image decodes."""
    data = path.read_bytes()
    assert data[:8] == SIGNATURE, f"{path} is not a PNG"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"{path}: bad CRC in chunk {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND", (
        f"{path}: chunks {[k for k, _ in chunks]}"
    )
    width, height = struct.unpack(">II", chunks[0][1][:8])
    zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))

    from PIL import Image  # in .venv through matplotlib

    with Image.open(path) as image:
        image.load()  # decodes every pixel
        assert image.size == (width, height)
        assert len(image.getcolors(maxcolors=1 << 20) or ()) > 10, (
            f"{path} is (almost) blank"
        )
    return width, height
