"""The SDK's request building and response parsing (no server needed)."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from stylecast.client import (FrameResult, InvalidArgument, NotFound, Output, ResourceExhausted, StreamOptions,
                              Style, StylecastError, Unavailable, error_for)
from stylecast.client.messages import (CHUNK_BYTES, encoded_bytes, parse_response, search_request, to_config,
                                       to_image, upload_messages)
from stylecast.v1 import stylecast_pb2 as pb


def test_arrays_travel_as_raw_pixels() -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = to_image(rgb)
    assert (msg.pixel_format, msg.width, msg.height) == (pb.PIXEL_FORMAT_RGB24, 3, 2)
    assert msg.data == rgb.tobytes()
    assert to_image(np.zeros((4, 5, 4), np.uint8)).pixel_format == pb.PIXEL_FORMAT_RGBA32
    grey = to_image(np.zeros((4, 5, 1), np.uint8))
    assert (grey.pixel_format, len(grey.data)) == (pb.PIXEL_FORMAT_GRAY8, 20)
    floats = to_image(np.full((1, 1, 3), 1.0, np.float32))
    assert floats.data == b"\xff\xff\xff"
    # a non-contiguous view is sent in row-major order
    view = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)[:, ::2]
    assert to_image(view).data == np.ascontiguousarray(view).tobytes()


def test_bad_arrays_are_rejected_before_sending() -> None:
    with pytest.raises(ValueError, match="H×W"):
        to_image(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        to_image(np.zeros((2, 2, 3), np.int32))
    with pytest.raises(TypeError, match="cannot send"):
        to_image(12)


def test_files_bytes_and_pil_images(tmp_path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (7, 5), (10, 20, 30)).save(path)
    assert to_image(path).data == path.read_bytes()
    assert to_image(str(path)).pixel_format == pb.PIXEL_FORMAT_UNSPECIFIED
    assert to_image(bytearray(b"xyz")).data == b"xyz"
    pil = to_image(Image.new("P", (7, 5)))
    assert (pil.pixel_format, pil.width, pil.height) == (pb.PIXEL_FORMAT_RGB24, 7, 5)
    png = encoded_bytes(np.zeros((6, 4, 3), np.uint8))
    assert Image.open(io.BytesIO(png)).size == (4, 6)


def test_uploads_are_named_then_chunked_at_one_mib() -> None:
    data = bytes(range(256)) * (CHUNK_BYTES * 2 // 256 + 10)
    msgs = list(upload_messages(data, "starry"))
    assert [m.name for m in msgs] == ["starry", "", ""]
    assert [len(m.chunk) for m in msgs] == [CHUNK_BYTES, CHUNK_BYTES, len(data) - 2 * CHUNK_BYTES]
    assert b"".join(m.chunk for m in msgs) == data
    assert len(list(upload_messages(b"tiny", ""))) == 1


def test_stream_config_from_options() -> None:
    cfg = to_config(StreamOptions("abc", strength=0.0, output="png", mode="live", process_max_side=256,
                                  model="m"))
    assert cfg.style_id == "abc" and cfg.HasField("strength") and cfg.strength == 0.0
    assert (cfg.output.encoding, cfg.mode, cfg.process_max_side, cfg.model) == (
        pb.ENCODING_PNG, pb.STREAM_MODE_LIVE, 256, "m")
    assert not to_config(StreamOptions("abc")).HasField("strength")
    style = Style(id="s1", name="", created_at=None)
    blend = to_config(StreamOptions({style: 1.0, "s2": 3.0}, output=Output("raw", width=8, height=6)))
    assert [(w.style_id, w.weight) for w in blend.blend] == [("s1", 1.0), ("s2", 3.0)]
    assert (blend.output.encoding, blend.output.width, blend.output.height) == (pb.ENCODING_RAW_RGB24, 8, 6)
    with pytest.raises(ValueError, match="mode"):
        to_config(StreamOptions("abc", mode="sometimes"))
    with pytest.raises(ValueError, match="style is required"):
        to_config(StreamOptions(""))
    with pytest.raises(ValueError, match="encoding"):
        Output("gif")


def test_search_needs_exactly_one_query() -> None:
    assert search_request("abc", None, 5, "").style_id == "abc"
    assert search_request(None, b"img", 5, "").image.data == b"img"
    with pytest.raises(ValueError):
        search_request("abc", b"img", 5, "")
    with pytest.raises(ValueError):
        search_request(None, None, 5, "")


def test_error_mapping_is_one_table() -> None:
    assert type(error_for(grpc.StatusCode.NOT_FOUND, "x")) is NotFound
    assert type(error_for(3, "bad")) is InvalidArgument  # google.rpc.Code numbers from FrameError
    assert type(error_for(8)) is ResourceExhausted
    assert type(error_for(grpc.StatusCode.UNAVAILABLE)) is Unavailable
    unknown = error_for(999, "?")
    assert type(unknown) is StylecastError and unknown.code == grpc.StatusCode.UNKNOWN
    assert error_for(5, "no style abc").details == "no style abc"


def test_responses_become_frame_results() -> None:
    pixels = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    ok = parse_response(pb.StylizeResponse(frame=pb.StylizedFrame(
        id=4, image=pb.Image(data=pixels.tobytes(), pixel_format=pb.PIXEL_FORMAT_RGB24, width=2, height=2),
        timings=pb.StageTimings(infer_ms=3.5), backend="litert")), latency_ms=9.0)
    assert ok.ok and ok.id == 4 and ok.format == "raw" and ok.timings.infer_ms == 3.5 and ok.latency_ms == 9.0
    np.testing.assert_array_equal(ok.to_array(), pixels)
    err = parse_response(pb.StylizeResponse(error=pb.FrameError(id=5, code=3, message="corrupt JPEG")))
    assert err.status == "error" and isinstance(err.error, InvalidArgument)
    with pytest.raises(InvalidArgument, match="corrupt JPEG"):
        err.raise_for_status()
    dropped = parse_response(pb.StylizeResponse(dropped=pb.FrameDropped(id=6, reason="newer frame")))
    assert dropped.status == "dropped" and dropped.drop_reason == "newer frame"
    with pytest.raises(StylecastError, match="dropped"):
        dropped.to_array()


def test_result_save_keeps_bytes_or_reencodes(tmp_path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (5, 3), (200, 10, 10)).save(buf, format="JPEG")
    result = FrameResult(id=0, status="ok", data=buf.getvalue(), width=5, height=3)
    assert result.format == "jpeg"
    assert result.save(tmp_path / "a.jpg").read_bytes() == buf.getvalue()
    png = result.save(tmp_path / "a.png")
    assert Image.open(png).format == "PNG" and Image.open(png).size == (5, 3)
