"""Strength and blends: server outputs against the backend called directly on the same package.

The direct path converts pixels with the server's own functions (``to_float``/``to_uint8``): a
reference that converts otherwise (dividing by 255.0 differs from multiplying by its reciprocal
in the last bit for half the levels) matches only on CPUs whose kernels round those inputs alike."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from conftest import decode_result, picture, psnr, raw_image, register
from PIL import Image

from stylecast.backends.base import BackendOptions, create_backend
from stylecast.backends.package import load_package
from stylecast.model.preprocess import style_image, to_float, to_uint8
from stylecast.v1 import stylecast_pb2 as pb

RAW = pb.OutputOptions(encoding=pb.ENCODING_RAW_RGB24)


@pytest.fixture(scope="module")
def direct(tiny_models_dir):
    backend = create_backend("litert")
    backend.load(load_package(tiny_models_dir / "tiny" / "1"), BackendOptions(format="tflite-fp32", threads=1))
    yield backend
    backend.close()


def vector_of(backend, img: np.ndarray) -> np.ndarray:
    return backend.predict_style(style_image(Image.fromarray(img))[None])[0]


def stylize(backend, content: np.ndarray, vector: np.ndarray) -> np.ndarray:
    return to_uint8(backend.stylize(to_float(content[None]), vector[None])[0])


async def stream_once(stub, cfg: pb.StreamConfig, content: np.ndarray, n: int = 1) -> list[np.ndarray]:
    async def requests():
        yield pb.StylizeRequest(config=cfg)
        for i in range(n):
            yield pb.StylizeRequest(frame=pb.Frame(id=i, image=raw_image(content)))

    return [decode_result(r.frame.image) async for r in stub.Stylize(requests())]


async def test_strength_one_stream_equals_stylize_image_equals_direct_backend(stub, direct):
    style_img, content = picture(100, 100, seed=40), picture(64, 48, seed=41)
    style = await register(stub, style_img)
    cfg = pb.StreamConfig(style_id=style.id, strength=1.0, output=RAW)
    streamed = (await stream_once(stub, cfg, content))[0]
    unary = await stub.StylizeImage(pb.StylizeImageRequest(config=cfg, image=raw_image(content)))
    np.testing.assert_array_equal(streamed, decode_result(unary.result.image))
    np.testing.assert_array_equal(streamed, stylize(direct, content, vector_of(direct, style_img)))


async def test_strength_zero_is_stylized_by_the_contents_own_vector(stub, direct):
    style_img, content = picture(100, 100, seed=42), picture(64, 48, seed=43)
    style = await register(stub, style_img)
    outs = await stream_once(stub, pb.StreamConfig(style_id=style.id, strength=0.0, output=RAW), content, n=3)
    expected = stylize(direct, content, vector_of(direct, content))
    for out in outs:
        assert psnr(out, expected) >= 40.0
    full = stylize(direct, content, vector_of(direct, style_img))
    assert psnr(full, expected) < 40.0  # the check can fail: strength matters for this model
    half = (await stream_once(stub, pb.StreamConfig(style_id=style.id, strength=0.5, output=RAW), content))[0]
    v_half = 0.5 * vector_of(direct, style_img) + 0.5 * vector_of(direct, content)
    assert psnr(half, stylize(direct, content, v_half)) >= 40.0


async def test_blend_equals_the_weighted_average_vector(stub, direct):
    a_img, b_img, content = picture(90, 90, seed=44), picture(90, 90, seed=45), picture(48, 64, seed=46)
    a, b = await register(stub, a_img), await register(stub, b_img)
    blend = [pb.StyleWeight(style_id=a.id, weight=3.0), pb.StyleWeight(style_id=b.id, weight=3.0)]
    out = (await stream_once(stub, pb.StreamConfig(blend=blend, output=RAW), content))[0]
    avg = (vector_of(direct, a_img) + vector_of(direct, b_img)) / 2
    expected = stylize(direct, content, avg)
    assert np.abs(out.astype(int) - expected).max() <= 1
    only_a = stylize(direct, content, vector_of(direct, a_img))
    assert psnr(only_a, expected) < 40.0


async def test_bad_style_settings_are_invalid_arguments(stub):
    style = await register(stub, picture(64, 64, seed=47))
    content = raw_image(picture(16, 16))
    bad = [
        pb.StreamConfig(style_id=style.id, strength=1.5),
        pb.StreamConfig(),
        pb.StreamConfig(blend=[pb.StyleWeight(style_id=style.id, weight=-1)]),
        pb.StreamConfig(style_id=style.id, output=pb.OutputOptions(quality=101)),
        pb.StreamConfig(style_id=style.id, model="other-model"),
    ]
    for cfg in bad:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.StylizeImage(pb.StylizeImageRequest(config=cfg, image=content))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, cfg
