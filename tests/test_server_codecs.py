"""Frame decoding/encoding: raw formats, EXIF rotation, alpha, grey, CMYK, limits."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from conftest import encoded, picture
from PIL import Image

from stylecast.server import codecs
from stylecast.server.errors import InvalidArgument

LIMIT = 40_000_000


def decode(data: bytes, fmt: str = "encoded", w: int = 0, h: int = 0, **kw):
    return codecs.decode(data, fmt, w, h, max_pixels=kw.pop("max_pixels", LIMIT), **kw)


def test_raw_formats_and_byte_counts():
    img = picture(5, 3)
    out, size = decode(img.tobytes(), "rgb24", 5, 3)
    np.testing.assert_array_equal(out, img)
    assert size == (5, 3)
    grey = np.arange(15, dtype=np.uint8).reshape(3, 5)
    np.testing.assert_array_equal(decode(grey.tobytes(), "gray8", 5, 3)[0], np.repeat(grey[..., None], 3, 2))
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = (0, 0, 0, 0)        # transparent black → white
    rgba[0, 1] = (10, 20, 30, 255)   # opaque stays
    np.testing.assert_array_equal(decode(rgba.tobytes(), "rgba32", 2, 1)[0], [[[255, 255, 255], [10, 20, 30]]])
    with pytest.raises(InvalidArgument, match="needs 45 bytes, got 44"):
        decode(img.tobytes()[:-1], "rgb24", 5, 3)
    with pytest.raises(InvalidArgument, match="zero size"):
        decode(b"", "rgb24", 0, 3)


def test_encoded_images_are_rgb_with_alpha_on_white_and_grey_expanded():
    img = picture(20, 10)
    for fmt, tol in (("PNG", 0), ("WEBP", 0), ("JPEG", 40)):
        save = {"lossless": True} if fmt == "WEBP" else {}
        out, size = decode(encoded(img, fmt, **save))
        assert size == (20, 10) and out.shape == (10, 20, 3) and out.dtype == np.uint8
        assert np.abs(out.astype(int) - img).mean() <= tol / 4
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    out, _ = decode(encoded(rgba, "PNG"))
    assert (out == 255).all()  # fully transparent → white
    grey = Image.fromarray(np.full((6, 6), 77, np.uint8), "L")
    buf = io.BytesIO()
    grey.save(buf, "PNG")
    assert (decode(buf.getvalue())[0] == 77).all()


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    buf = io.BytesIO()
    cmyk.save(buf, "JPEG", quality=95)
    out, _ = decode(buf.getvalue())
    assert out.shape == (8, 8, 3)
    r, g, b = out.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_is_applied():
    img = np.zeros((10, 30, 3), np.uint8)
    img[:, :10] = 255   # white band on the left
    pil = Image.fromarray(img)
    exif = Image.Exif()
    exif[0x0112] = 6    # rotate 90° clockwise on display
    buf = io.BytesIO()
    pil.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    out, size = decode(buf.getvalue(), draft_side=8)
    assert size == (10, 30) and out.shape == (30, 10, 3)
    assert out[:8].mean() > 200 and out[-8:].mean() < 50  # the left band is now on top


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height with a tiny, truncated body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)) + b"\0\0\0\0IDAT\0\0\0\0")


def test_bombs_are_refused_from_the_header_and_corrupt_bytes_are_invalid():
    with pytest.raises(InvalidArgument, match="MP"):
        decode(_png_header_only(100_000, 100_000))
    with pytest.raises(InvalidArgument, match="MP"):
        decode(encoded(picture(64, 64)), max_pixels=1000)
    with pytest.raises(InvalidArgument, match="not a JPEG, PNG or WebP"):
        decode(b"GIF89a" + b"\0" * 20)
    with pytest.raises(InvalidArgument):
        decode(encoded(picture(64, 64), "JPEG")[:200])
    with pytest.raises(InvalidArgument, match="empty"):
        decode(b"")


def test_jpeg_draft_decodes_small_but_reports_full_size():
    out, size = decode(encoded(picture(640, 480), "JPEG"), draft_side=100)
    assert size == (640, 480)
    assert 100 <= max(out.shape[:2]) < 640


def test_sizes_and_encodings():
    assert codecs.fit_within((1920, 1080), 512) == (512, 288)
    assert codecs.fit_within((100, 50), 512) == (100, 50)
    assert codecs.output_size((640, 480), 0, 0) == (640, 480)
    assert codecs.output_size((640, 480), 320, 0) == (320, 240)
    assert codecs.output_size((640, 480), 0, 120) == (160, 120)
    img = picture(32, 16)
    assert codecs.encode(img, "raw") == img.tobytes()
    for enc, magic in (("jpeg", b"\xff\xd8"), ("png", b"\x89PNG"), ("webp", b"RIFF")):
        data = codecs.encode(img, enc, 80)
        assert data.startswith(magic)
        assert decode(data)[1] == (32, 16)
    assert codecs.resize(img, (8, 4)).shape == (4, 8, 3)
    with pytest.raises(InvalidArgument):
        codecs.encode(img, "gif")
