"""Hostile input against the real in-process server with authentication on (hypothesis).

Generated frames, stream configs, style uploads, page tokens, manifests, chunks and model
names go to every RPC.  Whatever a client sends, the server answers with a status that names
the client's mistake — never INTERNAL or UNKNOWN, in-band frame errors included — nothing
outside the model roots changes on disk, and a normal frame is answered afterwards.  Bounded
to a fixed number of examples per RPC (derandomized, about two minutes on two cores); the
examples tried and the statuses seen per RPC are printed at the end of the module.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import threading
from collections import Counter, defaultdict
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import SUMMARY, make_config, picture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from stylecast.server.app import start
from stylecast.server.auth import tokens_entry
from stylecast.v1 import model_admin_pb2 as apb
from stylecast.v1 import model_admin_pb2_grpc as apb_grpc
from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

TOKEN = (("authorization", "Bearer tok-fuzz"),)
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
BAD_NUMBERS = {c.value[0] for c in BAD}
CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}
SEEN: dict[str, Counter] = defaultdict(Counter)
FUZZ = settings(max_examples=700, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
CHANNEL_OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]


class ThreadServer:
    """A real server on its own event loop thread, so hypothesis tests can stay synchronous."""

    def __init__(self, config) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.running = asyncio.run_coroutine_threadsafe(start(config), self.loop).result(300)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.running.stop(2.0), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


def snapshot(*folders: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def hostile(tiny_models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    models = root / "models"
    shutil.copytree(tiny_models_dir / "tiny" / "1", models / "tiny" / "1")
    outside = root / "outside"                     # what a traversal would reach
    (outside / "v").mkdir(parents=True)
    (outside / "v" / "keep.txt").write_text("keep")
    (root / "tokens.toml").write_text(tokens_entry("fuzz", ("stylize", "styles", "admin"), "tok-fuzz"))
    config = make_config(models, root, tokens_file=str(root / "tokens.toml"), max_message_bytes=8 << 20,
                         max_pixels=4_000_000, max_upload_bytes=16 << 20, warmup_sizes="")
    before = snapshot(models, outside)
    server = ThreadServer(config)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.running.port}", options=CHANNEL_OPTIONS)
    stub, admin = pb_grpc.StyleTransferStub(channel), apb_grpc.ModelAdminStub(channel)
    style = stub.RegisterStyle(iter([pb.StyleUpload(name="seed", chunk=png(picture(64, 64, seed=1)))]),
                               metadata=TOKEN).style
    yield stub, admin, style.id, root
    try:
        normal_frame_answered(stub, style.id)
        assert snapshot(models, outside) == before, "a file outside the upload folder changed"
        assert {p.name for p in root.iterdir()} <= {"models", "outside", "uploads", "tokens.toml", "styles.db",
                                                    "styles.db-wal", "styles.db-shm"}
    finally:
        channel.close()
        server.stop()
        report()


def report() -> None:
    lines = [f"{rpc:14s} {sum(codes.values()):4d} examples: " + ", ".join(f"{c} {n}" for c, n in codes.most_common())
             for rpc, codes in sorted(SEEN.items())]
    SUMMARY["hostile-input suite: examples per RPC and the statuses they got"] = lines


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def normal_frame_answered(stub, style_id: str) -> None:
    img = picture(24, 16)
    res = stub.StylizeImage(pb.StylizeImageRequest(
        config=pb.StreamConfig(style_id=style_id, output=pb.OutputOptions(encoding=pb.ENCODING_RAW_RGB24)),
        image=pb.Image(data=img.tobytes(), pixel_format=pb.PIXEL_FORMAT_RGB24, width=24, height=16)),
        metadata=TOKEN, timeout=60)
    assert (res.result.image.width, res.result.image.height) == (24, 16)


def record(rpc: str, call) -> object:
    """Run ``call()``; record and check its final status (never INTERNAL/UNKNOWN)."""
    try:
        result = call()
        code = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code, result = exc.code(), None
        assert code not in BAD, f"{rpc}: {code.name}: {exc.details()}"
    SEEN[rpc][code.name] += 1
    return result


# ------------------------------------------------------------------ strategies

def mostly(valid, hostile):
    """``valid`` nine times in ten, else ``hostile``: most examples get deep into the server."""
    return st.integers(0, 9).flatmap(lambda n: hostile if n == 5 else valid)  # not 0: hypothesis favours bounds


u32 = st.one_of(st.integers(0, 64), st.integers(0, 70_000), st.sampled_from([0, 1, 16383, 16384, 65536, 2**32 - 1]))
enum = st.one_of(st.integers(-3, 6), st.sampled_from([2**31 - 1, -2**31]))
floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
names = st.one_of(st.text(max_size=80), st.sampled_from(["../x", "/tmp", "tiny", "1", "..", ".", "a/b", "tiny\0",
                                                         "x" * 300, "\x1b[31mred", "evil\n"]))
sizes = mostly(st.sampled_from([0, 0, 8, 33, 64]), u32)


@st.composite
def images(draw):
    kind = draw(st.sampled_from(["random", "png", "jpeg", "webp", "raw", "raw", "truncated"]))
    w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    img = picture(w, h, seed=draw(st.integers(0, 5)))
    if kind == "random":
        return pb.Image(data=draw(st.binary(max_size=256)), pixel_format=draw(enum), width=draw(u32), height=draw(u32))
    if kind == "raw":
        fmt = draw(st.sampled_from([1, 2, 3]))
        data = {1: img.tobytes(), 2: np.dstack([img, img[..., :1]]).tobytes(), 3: img[..., 0].tobytes()}[fmt]
        return pb.Image(data=data, pixel_format=fmt, width=draw(mostly(st.just(w), st.sampled_from([w + 1, 0]))),
                        height=h)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "truncated": "PNG"}[kind])
    data = buf.getvalue()
    return pb.Image(data=data[:len(data) // 2] if kind == "truncated" else data)


@st.composite
def configs(draw, style_id: str):
    sid = draw(mostly(st.just(style_id), st.one_of(st.just(""), st.text(max_size=70))))
    blend = draw(st.lists(st.builds(pb.StyleWeight, style_id=mostly(st.just(style_id), st.text(max_size=10)),
                                    weight=mostly(st.floats(0.1, 2), floats)), min_size=1, max_size=3))
    use_blend = draw(st.integers(0, 3)) == 0
    both = draw(mostly(st.just(False), st.just(True)))   # style_id and blend together: a client mistake
    cfg = pb.StreamConfig(style_id=sid if both or not use_blend else "", blend=blend if use_blend else [],
                          output=pb.OutputOptions(encoding=draw(mostly(st.integers(0, 4), enum)),
                                                  quality=draw(mostly(st.integers(0, 100), u32)),
                                                  width=draw(sizes), height=draw(sizes)),
                          process_max_side=draw(mostly(st.sampled_from([0, 32, 64]), u32)),
                          mode=draw(mostly(st.integers(0, 2), enum)), model=draw(mostly(st.just(""), names)),
                          model_version=draw(mostly(st.just(""), st.one_of(st.just("1"), names))))
    if draw(st.booleans()):
        cfg.strength = draw(mostly(st.floats(0, 1), floats))
    return cfg


# ----------------------------------------------------------------------- tests

def test_stylize_image(hostile):
    stub, _, style_id, _ = hostile

    @FUZZ
    @given(configs(style_id), images())
    def run(cfg, image):
        record("StylizeImage", lambda: stub.StylizeImage(pb.StylizeImageRequest(config=cfg, image=image),
                                                         metadata=TOKEN, timeout=60))

    run()


def test_stylize_streams(hostile):
    stub, _, style_id, _ = hostile
    config = configs(style_id).map(lambda c: pb.StylizeRequest(config=c))
    frame = st.builds(lambda i, im: pb.StylizeRequest(frame=pb.Frame(id=i, image=im)),
                      st.integers(0, 2**64 - 1), images())
    message = mostly(frame, st.one_of(config, st.just(pb.StylizeRequest())))

    @FUZZ
    @given(mostly(config, message), st.lists(message, max_size=6))
    def run(first, rest):
        requests = [first, *rest]

        def call():
            answers = list(stub.Stylize(iter(requests), metadata=TOKEN, timeout=60))
            for a in answers:
                if a.WhichOneof("msg") == "error":
                    assert a.error.code not in BAD_NUMBERS, a.error
                    SEEN["Stylize/frame"][CODE_NAMES.get(a.error.code, str(a.error.code))] += 1
            return answers

        record("Stylize", call)

    run()


def test_register_and_manage_styles(hostile):
    stub, _, style_id, _ = hostile
    chunks = mostly(images().map(lambda im: im.data), st.binary(max_size=64))

    @FUZZ
    @given(mostly(st.lists(st.builds(pb.StyleUpload, name=mostly(st.text(max_size=20), names), chunk=chunks),
                           min_size=1, max_size=3), st.just([])),
           names, st.integers(0, 3),
           st.one_of(st.text(max_size=60), st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode()),
                     st.sampled_from([base64.urlsafe_b64encode(b"99999999999999999999999:x").decode(),
                                      base64.urlsafe_b64encode(b"-1:").decode(), "====", "\0"])),
           u32)
    def run(uploads, some_id, which, token, page_size):
        if which == 0:
            record("RegisterStyle", lambda: stub.RegisterStyle(iter(uploads), metadata=TOKEN, timeout=60))
        elif which == 1:
            record("GetStyle", lambda: stub.GetStyle(pb.GetStyleRequest(id=some_id, include_thumbnail=True),
                                                     metadata=TOKEN, timeout=60))
        elif which == 2:
            record("ListStyles", lambda: stub.ListStyles(pb.ListStylesRequest(page_size=page_size, page_token=token),
                                                         metadata=TOKEN, timeout=60))
        else:
            record("DeleteStyle", lambda: stub.DeleteStyle(
                pb.DeleteStyleRequest(id=some_id if some_id != style_id else some_id + "x"), metadata=TOKEN,
                timeout=60))
        record("SearchStyles", lambda: stub.SearchStyles(
            pb.SearchStylesRequest(style_id=some_id if which else style_id, limit=page_size,
                                   model=some_id[:3] if which == 3 else ""), metadata=TOKEN, timeout=60))

    run()


def manifest_base(root: Path) -> dict:
    return json.loads((root / "models" / "tiny" / "1" / "manifest.json").read_text())


def _nested(children):
    return st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3))


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), floats,
                                     st.text(max_size=20)), _nested, max_leaves=8)


def test_upload_and_admin(hostile):
    _, admin, _, root = hostile
    base = manifest_base(root)
    field = st.sampled_from(["name", "version", "style_dim", "artifacts", "format_version", "path", "size",
                             "chunks", "sha256", "root", "endpoints"])

    @st.composite
    def manifests(draw):
        kind = draw(st.sampled_from(["mutated", "raw", "json"]))
        if kind == "raw":
            return draw(st.binary(max_size=200))
        if kind == "json":
            return json.dumps(draw(json_values)).encode()
        data = json.loads(json.dumps(base))
        data["version"] = draw(st.sampled_from(["f1", "f2"]))
        for _ in range(draw(st.integers(1, 3))):
            key, value = draw(field), draw(st.one_of(json_values, names))
            try:
                if key in ("path", "size", "chunks", "sha256"):
                    next(iter(data["artifacts"].values()))["files"][0][key] = value
                elif key in ("root", "endpoints"):
                    next(iter(data["artifacts"].values()))[key] = value
                else:
                    data[key] = value
            except (AttributeError, TypeError, KeyError, IndexError, StopIteration):
                pass  # an earlier mutation replaced the structure this one would reach into
        try:
            return json.dumps(data).encode()
        except ValueError:  # NaN keys and the like
            return b"{}"

    chunk = st.builds(lambda p, i, d: apb.ModelChunk(chunk=apb.FileChunk(path=p, index=i, data=d)),
                      st.one_of(names, st.just("tflite/fp32.tflite")), u32, st.binary(max_size=64))

    weights = st.one_of(st.sampled_from([{"1": 100}, {"1": 60, "f1": 40}, {"1": 0, "f2": 100}]),
                        st.dictionaries(mostly(st.sampled_from(["1", "f1", "f2"]), names),
                                        mostly(st.integers(0, 100), st.integers(-2**31, 2**31 - 1)), max_size=3))

    @FUZZ
    @given(manifests(), st.lists(chunk, max_size=3), names, names, st.integers(0, 6), st.booleans(), weights,
           mostly(st.sampled_from(["", "tiny"]), names))
    def run(manifest, chunks, name, version, which, delete, split, model):
        if which == 0:
            record("UploadModel", lambda: list(admin.UploadModel(
                iter([apb.ModelChunk(manifest=manifest), *chunks]), metadata=TOKEN, timeout=60)))
        elif which == 1:
            record("LoadModel", lambda: admin.LoadModel(apb.LoadModelRequest(name=name, version=version),
                                                        metadata=TOKEN, timeout=120))
        elif which == 2:
            record("UnloadModel", lambda: admin.UnloadModel(
                apb.UnloadModelRequest(name=name, version=version, delete_files=delete), metadata=TOKEN, timeout=60))
        elif which == 5:
            record("SetTrafficSplit", lambda: admin.SetTrafficSplit(apb.SetTrafficSplitRequest(
                model=model, weights=split), metadata=TOKEN, timeout=120))
        elif which == 6:
            record("GetTrafficSplit", lambda: admin.GetTrafficSplit(apb.GetTrafficSplitRequest(model=name),
                                                                    metadata=TOKEN, timeout=60))
        elif which == 3:
            record("WatchModel", lambda: list(admin.WatchModel(apb.WatchModelRequest(name=name, version=version),
                                                               metadata=TOKEN, timeout=120)))
        else:
            record("ListModels", lambda: admin.ListModels(apb.ListModelsRequest(name=name), metadata=TOKEN, timeout=60))

    run()


def test_tokens_and_metadata(hostile):
    stub, _, style_id, _ = hostile

    @FUZZ
    @given(st.lists(st.tuples(st.sampled_from(["authorization", "x-other"]),
                              st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)),
                    max_size=3))
    def run(metadata):
        record("auth", lambda: stub.GetStyle(pb.GetStyleRequest(id=style_id), metadata=metadata, timeout=30))

    run()
