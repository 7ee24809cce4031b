"""The Stylize stream's own (de)serialization: pre-serialized answers parse as the message built
field by field, with the size the stream counts for them; frames read with their pixels left in
the received message parse as protobuf parses them, whatever the layout of their fields."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from conftest import decode_result, picture, raw_image, register
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from stylecast.server import wire
from stylecast.server.session import FrameResult
from stylecast.v1 import stylecast_pb2 as pb

TIMINGS = {"queue": 1.5, "decode": 0.25, "infer": 20.0, "encode": 0.125, "total": 22.0}


def result(data, encoding: str = "raw", width: int = 53, height: int = 37) -> FrameResult:
    return FrameResult(data, width, height, encoding, 2, TIMINGS, "litert", "stylecast-small", "4")


@pytest.mark.parametrize("frame_id, res", [
    (0, result(memoryview(np.arange(37 * 53 * 3, dtype=np.uint8).reshape(37, 53, 3)).cast("B"))),
    (7, result(np.full((1024, 1024, 3), 9, np.uint8).data)),     # 3 MiB: multi-byte lengths
    (2 ** 40, result(b"\xff\xd8 not really a jpeg", "jpeg")),
    (3, result(b"", "png", 1, 1)),
])
def test_stylized_frame_response_parses_as_the_message(frame_id, res):
    encoded = wire.stylized_frame_response(frame_id, res)
    expected = pb.StylizeResponse(frame=wire.stylized_frame(frame_id, res))
    parsed = pb.StylizeResponse.FromString(encoded)
    assert parsed == expected
    assert parsed.frame.image.data == bytes(memoryview(res.data).cast("B"))
    # what the stream's answer-size check and byte accounting count: the bytes sent, which are
    # the message's size plus the second image field's tag and length (at most 1 + 5 + 1 bytes)
    assert wire.stylize_response_size(encoded) == len(encoded)
    assert expected.ByteSize() < len(encoded) <= expected.ByteSize() + 7
    assert wire.stylize_response_size(expected) == expected.ByteSize()
    assert wire.serialize_stylize_response(encoded) is encoded
    assert wire.serialize_stylize_response(expected) == expected.SerializeToString()


# ------------------------------------------------------------------ requests


def frame_request(frame_id: int, data: bytes, **image) -> bytes:
    return pb.StylizeRequest(frame=pb.Frame(id=frame_id, image=pb.Image(data=data, **image))).SerializeToString()


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field, as protobuf writes it."""
    return wire._field_prefix(number, len(payload)) + payload


def as_protobuf_reads_it(encoded: bytes) -> tuple:
    """What protobuf makes of ``encoded``, in the shape the parser answers."""
    msg = pb.StylizeRequest.FromString(encoded)
    if msg.WhichOneof("msg") != "frame":
        return ("request", msg)
    image = pb.Image()
    image.CopyFrom(msg.frame.image)
    data = image.data
    image.ClearField("data")
    return ("frame", msg.frame.id, image, data, len(encoded))


def as_parsed(encoded: bytes) -> tuple:
    got = wire.parse_stylize_request(encoded)
    if not isinstance(got, wire.ReceivedFrame):
        return ("request", got)
    image = pb.Image()
    image.CopyFrom(got.image)
    image.ClearField("data")
    return ("frame", got.id, image, bytes(got.data), got.nbytes)


PIXELS = np.arange(64 * 48 * 3, dtype=np.uint8).tobytes()
IMAGE_HEAD = pb.Image(pixel_format=pb.PIXEL_FORMAT_RGB24, width=64, height=48).SerializeToString()
LAYOUTS = {
    "usual": frame_request(7, PIXELS, pixel_format=pb.PIXEL_FORMAT_RGB24, width=64, height=48),
    "no pixels": frame_request(8, b""),
    "id after the image": field(2, field(2, IMAGE_HEAD + field(1, PIXELS)) + pb.Frame(id=9).SerializeToString()),
    "pixels in a second image field (merged)": field(2, pb.Frame(id=10, image=pb.Image(width=64)).SerializeToString()
                                                     + field(2, field(1, PIXELS) + IMAGE_HEAD)),
    "pixels twice (the last wins)": field(2, field(2, field(1, b"old") + IMAGE_HEAD + field(1, PIXELS))),
    "frame twice (merged)": frame_request(11, b"") + frame_request(0, PIXELS, width=64),
    "unknown fields": field(2, field(2, field(1, PIXELS) + field(9, b"x") + IMAGE_HEAD) + field(15, b"y")),
    "config then frame (the frame wins)": pb.StylizeRequest(config=pb.StreamConfig(style_id="s")).SerializeToString()
                                          + frame_request(12, PIXELS),
    "frame then config (the config wins)": frame_request(13, PIXELS)
                                           + pb.StylizeRequest(config=pb.StreamConfig(style_id="s")).SerializeToString(),
    "config": pb.StylizeRequest(config=pb.StreamConfig(style_id="s", process_max_side=256)).SerializeToString(),
    "empty": b"",
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_frame_request_parses_as_protobuf_parses_it(layout):
    encoded = LAYOUTS[layout]
    assert as_parsed(encoded) == as_protobuf_reads_it(encoded)


def test_the_usual_frame_leaves_its_pixels_in_the_received_message():
    encoded = LAYOUTS["usual"]
    got = wire.parse_stylize_request(encoded)
    assert isinstance(got.data, memoryview) and got.data.obj is encoded     # a view: nothing copied
    image = got.image_input()
    assert (image.pixel_format, image.width, image.height, bytes(image.data)) == ("rgb24", 64, 48, PIXELS)
    assert got.nbytes == len(encoded)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(LAYOUTS)), st.integers(0, 200), st.binary(max_size=4))
def test_a_damaged_request_is_refused_or_parses_as_protobuf_parses_it(layout, cut, noise):
    """Truncated or with bytes appended: the parser answers MalformedRequest exactly when protobuf
    cannot parse the message, else what protobuf reads."""
    encoded = LAYOUTS[layout]
    damaged = encoded[:max(0, len(encoded) - cut)] + noise
    try:
        expected = as_protobuf_reads_it(damaged)
    except DecodeError:
        assert isinstance(wire.parse_stylize_request(damaged), wire.MalformedRequest)
    else:
        assert as_parsed(damaged) == expected


async def test_frames_in_any_field_layout_are_stylized_alike_by_a_real_server(server, stub):
    """A client whose protobuf library writes the frame's fields in another order or splits the
    image (both valid encodings) gets the same answers as one writing the usual layout."""
    style = await register(stub, picture(64, 64, seed=3))
    img = picture(40, 32, seed=4)
    image = raw_image(img)
    head = pb.Image(pixel_format=image.pixel_format, width=image.width, height=image.height).SerializeToString()
    layouts = [
        frame_request(1, image.data, pixel_format=image.pixel_format, width=image.width, height=image.height),
        field(2, field(2, head + field(1, image.data)) + pb.Frame(id=2).SerializeToString()),
        field(2, pb.Frame(id=3, image=pb.Image(width=image.width)).SerializeToString() + field(2, head)
              + field(2, field(1, image.data))),
    ]
    config = pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id, output=pb.OutputOptions(
        encoding=pb.ENCODING_RAW_RGB24))).SerializeToString()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stylize = channel.stream_stream("/stylecast.v1.StyleTransfer/Stylize", request_serializer=bytes,
                                        response_deserializer=pb.StylizeResponse.FromString)
        answers = [a async for a in stylize(iter([config, *layouts]))]
    assert [a.frame.id for a in answers] == [1, 2, 3]
    outputs = [decode_result(a.frame.image) for a in answers]
    assert outputs[0].shape == (32, 40, 3)
    assert all(np.array_equal(outputs[0], o) for o in outputs[1:])


async def test_a_message_that_is_not_a_stylize_request_ends_the_stream_with_invalid_argument(server, stub):
    """After answering the frames before it, and the server goes on serving."""
    style = await register(stub, picture(64, 64, seed=5))
    config = pb.StylizeRequest(config=pb.StreamConfig(style_id=style.id)).SerializeToString()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stylize = channel.stream_stream("/stylecast.v1.StyleTransfer/Stylize", request_serializer=bytes,
                                        response_deserializer=pb.StylizeResponse.FromString)
        answers = []
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for answer in stylize(iter([config, frame_request(1, raw_image(picture(16, 16)).data,
                                                                    pixel_format=pb.PIXEL_FORMAT_RGB24,
                                                                    width=16, height=16), b"\xff\xff\xff\xff"])):
                answers.append(answer)
    assert [a.frame.id for a in answers] == [1]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a StylizeRequest" in refused.value.details()
    assert (await stub.GetStyle(pb.GetStyleRequest(id=style.id))).id == style.id
