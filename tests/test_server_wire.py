"""Pre-serialized Stylize answers: what clients parse equals the message built field by field,
and the size the stream counts for them is the message's size."""

from __future__ import annotations

import numpy as np
import pytest

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
