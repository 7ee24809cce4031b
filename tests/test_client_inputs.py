"""Every PIL mode and numpy dtype the SDK accepts gives the same pixels as the same image passed as a
file path (which the server decodes), checked through a real server; the others raise ValueError."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import picture, psnr
from PIL import Image

from stylecast.client import Client
from stylecast.model.preprocess import to_uint8

SIZE = (40, 32)  # width, height


def _alpha() -> np.ndarray:
    y, x = np.mgrid[0:SIZE[1], 0:SIZE[0]]
    return ((x * 255) // (SIZE[0] - 1)).astype(np.uint8) | (y % 2 * 40).astype(np.uint8)


def _grey16() -> np.ndarray:
    """A 16-bit ramp over the whole range (an 8-bit reading of it is far from white)."""
    y, x = np.mgrid[0:SIZE[1], 0:SIZE[0]]
    return ((x * 65535) // (SIZE[0] - 1) ^ (y * 97)).astype(np.uint16)


def mode_image(mode: str) -> Image.Image:
    rgb = Image.fromarray(picture(*SIZE, seed=60))
    if mode == "LA":
        return Image.merge("LA", (rgb.convert("L"), Image.fromarray(_alpha())))
    if mode == "RGBA":
        return Image.merge("RGBA", (*rgb.split(), Image.fromarray(_alpha())))
    if mode == "P":
        pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        pal.info["transparency"] = 3
        return pal
    if mode == "I;16":
        return Image.fromarray(_grey16())
    if mode == "I":
        return Image.fromarray(_grey16().astype(np.int32))
    return rgb.convert(mode)


def save(img: Image.Image, path: Path) -> Path:
    """``img`` as a file the server decodes: PNG (``I`` becomes 16-bit grey), CMYK as JPEG, and
    YCbCr as the PNG of its RGB conversion (no wire format holds YCbCr pixels as they are)."""
    if img.mode == "CMYK":
        img.save(path, "JPEG", quality=95)
    elif img.mode == "I":  # PIL writes no mode I PNG: the same values as a 16-bit one
        Image.fromarray(np.asarray(img).astype(np.uint16)).save(path, "PNG")
    else:
        (img.convert("RGB") if img.mode == "YCbCr" else img).save(path, "PNG")
    return path


def png48(rgb16: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (PIL writes none): signature, IHDR, one IDAT, IEND."""
    h, w, _ = rgb16.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in rgb16)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture
async def sdk(server):
    """``run(fn)``: call ``fn(client, style_id)`` with a blocking Client on a worker thread."""
    client = await asyncio.to_thread(Client, f"127.0.0.1:{server.port}")
    style = await asyncio.to_thread(client.register_style, picture(64, 64, seed=61))

    async def run(fn):
        return await asyncio.to_thread(fn, client, style.id)

    yield run
    await asyncio.to_thread(client.close)


def stylized(client: Client, style: str, image) -> np.ndarray:
    return client.stylize(image, style, output="raw").to_array()


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "I;16", "I", "RGB", "RGBA", "CMYK", "YCbCr"])
async def test_pil_mode_gives_the_same_pixels_as_the_file(sdk, tmp_path, mode) -> None:
    built = mode_image(mode)
    path = save(built, tmp_path / "in")
    opened = Image.open(path)
    images = [built]  # as built in memory; and as read back from the file where it keeps the mode
    if opened.mode == {"I": "I;16"}.get(mode, mode):
        images.append(opened)
    if mode == "CMYK":  # the file is lossy: only what is read back from it equals the path
        images = [opened]
    for image in images:
        got, want = await sdk(lambda c, s: (stylized(c, s, image), stylized(c, s, path)))
        np.testing.assert_array_equal(got, want, err_msg=f"mode {image.mode}")


async def test_ycbcr_read_from_a_jpeg_matches_the_path_within_jpeg_colour_rounding(sdk, tmp_path) -> None:
    """A JPEG read as YCbCr (``draft``) is converted by PIL; the server's decoder converts the same
    JPEG straight to RGB with its own rounding (inputs differ by at most one level), so the
    outputs are compared by PSNR, not exactly."""
    path = tmp_path / "in.jpg"
    Image.fromarray(picture(*SIZE, seed=60)).save(path, quality=95)
    image = Image.open(path)
    image.draft("YCbCr", image.size)
    assert image.mode == "YCbCr"
    got, want = await sdk(lambda c, s: (stylized(c, s, image), stylized(c, s, path)))
    assert psnr(got, want) >= 40.0


async def test_float_pil_mode_raises_saying_what_to_convert(sdk) -> None:
    image = Image.fromarray(picture(*SIZE, seed=62)[..., 0].astype(np.float32))
    with pytest.raises(ValueError, match=r"mode F.*convert"):
        await sdk(lambda c, s: stylized(c, s, image))


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def array_cases() -> dict[str, tuple[np.ndarray, bytes]]:
    """name → (array, encoded file bytes holding the same image)."""
    rgb = picture(*SIZE, seed=63)
    rgba = np.dstack([rgb, _alpha()])
    floats = (picture(*SIZE, seed=64).astype(np.float64) + 0.37) / 255.6  # off the 1/255 grid
    grey16 = _grey16()
    rgb16 = (rgb.astype(np.uint16) * 257 + np.arange(SIZE[0], dtype=np.uint16)[None, :, None] * 3)
    mask = rgb[..., 0] > 128
    return {
        "uint8 grey": (rgb[..., 1], png_bytes(rgb[..., 1])),
        "uint8 H×W×1": (rgb[..., 1:2], png_bytes(rgb[..., 1])),
        "uint8 RGB": (rgb, png_bytes(rgb)),
        "uint8 RGBA": (rgba, png_bytes(rgba)),
        "uint8 grey+alpha": (np.dstack([rgb[..., 2], _alpha()]), png_bytes(np.dstack([rgb[..., 2], _alpha()]))),
        "bool": (mask, png_bytes(mask)),
        "uint16 grey": (grey16, png_bytes(grey16)),
        "uint16 RGB": (rgb16, png48(rgb16)),
        "float64 RGB in [0, 1]": (floats, png_bytes(to_uint8(floats))),
        "float32 grey in [0, 1]": (floats[..., 0].astype(np.float32), png_bytes(to_uint8(floats[..., 0]))),
    }


@pytest.mark.parametrize("name", list(array_cases()))
async def test_numpy_dtype_gives_the_same_pixels_as_the_file(sdk, tmp_path, name) -> None:
    array, data = array_cases()[name]
    path = tmp_path / "in.png"
    path.write_bytes(data)
    got, want = await sdk(lambda c, s: (stylized(c, s, array), stylized(c, s, path)))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("array, message", [
    (np.zeros((8, 8, 3), np.int64), r"int64.*convert to uint8"),
    (np.zeros((8, 8), np.int16), r"int16.*convert to uint8"),
    (np.full((8, 8, 3), 2.0), r"\[0, 1\].*got 2\.\.2"),
    (np.full((8, 8), np.nan, np.float32), r"\[0, 1\]"),
    (np.zeros((8, 8, 5), np.uint8), r"shape"),
])
async def test_arrays_without_a_fixed_meaning_raise_saying_what_to_convert(sdk, array, message) -> None:
    with pytest.raises(ValueError, match=message):
        await sdk(lambda c, s: stylized(c, s, array))


async def test_a_gif_path_or_pil_gif_is_decoded_by_the_sdk(sdk, tmp_path) -> None:
    """GIF/BMP/TIFF are not wire formats: the SDK sends their pixels instead of bytes the server refuses."""
    gif = tmp_path / "in.gif"
    mode_image("P").save(gif)
    png = save(Image.open(gif), tmp_path / "same.png")
    got, from_pil, want = await sdk(lambda c, s: (stylized(c, s, gif), stylized(c, s, Image.open(gif)),
                                                  stylized(c, s, png)))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(from_pil, want)
