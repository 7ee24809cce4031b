"""The built-in model: held-out split, exporter fidelity per precision, package integrity,
XNNPACK partitioning and odd sizes through the real LiteRT backend."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from conftest import CHANNEL_OPTIONS, decode_result, picture, raw_image, register, running_servers

from stylecast.backends.base import BackendOptions, create_backend
from stylecast.backends.package import PackageError, load_package, locate_package
from stylecast.model import BUILTIN_DIR, BUILTIN_MODEL, QUALITY_MODEL, data
from stylecast.model.preprocess import style_image, to_float, to_uint8
from stylecast.model.xnnpack import xnnpack_partitions
from stylecast.v1 import stylecast_pb2 as pb
from stylecast.v1 import stylecast_pb2_grpc as pb_grpc

ASSETS = data.assets_dir()
needs_assets = pytest.mark.skipif(not (ASSETS / "models" / "magenta").is_dir(),
                                  reason=f"teacher assets not found at {ASSETS} (../shared/assets)")
# max |Δ| of the exported model vs Keras, per precision, on [0,1] outputs / raw style vectors
TOLERANCE = {"savedmodel": 1e-5, "onnx": 1e-4, "tflite-fp32": 1e-4, "tflite-fp16": 3e-2, "tflite-int8": 6e-2}
# the trained quality tier: max |Δ| of (image in [0,1], style vector of max |v| ≈ 3) vs Keras, about
# twice what this machine measured (int8: 0.075, 0.016; fp16: 1.0e-3, 0.7e-3)
QUALITY_TOLERANCE = {"onnx": (1e-4, 1e-4), "tflite-fp32": (1e-4, 1e-4), "tflite-fp16": (3e-3, 3e-3),
                     "tflite-int8": (0.15, 0.04)}


# the built-in tiers: the real-time one (served by default) and the quality one
TIERS = [BUILTIN_MODEL, QUALITY_MODEL]
QUALITY_CHECKPOINT = Path(__file__).resolve().parents[1] / "model" / "checkpoints" / "quality"


def builtin_package(name: str):
    """The latest committed version of built-in model ``name``."""
    return locate_package(BUILTIN_DIR, name)


# ------------------------------------------------------------------ split

def test_heldout_styles_and_val_are_disjoint_from_training(tmp_path):
    root = tmp_path / "assets"
    for sub in ("styles", "content/train", "content/val"):
        (root / sub).mkdir(parents=True)
    for name in data.HELDOUT_STYLES + ("train_style_a.jpg", "train_style_b.png"):
        (root / "styles" / name).touch()
    for name in ("p1.jpg", "p2.png"):
        (root / "content" / "train" / name).touch()
        (root / "content" / "val" / f"val_{name}").touch()
    assert len(data.HELDOUT_STYLES) >= 6
    train = {p.name for p in data.training_images(root)}
    assert train == {"train_style_a.jpg", "train_style_b.png", "p1.jpg", "p2.png"}
    assert not train & set(data.HELDOUT_STYLES)
    assert not train & {p.name for p in data.val_content(root)}


def test_predictor_batches_keep_the_painting_share_whatever_the_banks_hold():
    """draw_batch: distinct rows; with pools, the painting rows' share of many batches is the share
    asked for (Binomial(32, 0.7): 2,000 batches put the mean within 0.01 with a margin of 4 s.d.),
    not the banks' own share (10 %); pools smaller than a batch still fill it."""
    from stylecast.model.distill import draw_batch

    rng = np.random.default_rng(0)
    paintings, others = np.arange(0, 1000, 10), np.setdiff1d(np.arange(1000), np.arange(0, 1000, 10))
    share = []
    for _ in range(2000):
        idx = draw_batch(rng, 1000, 32, (paintings, others), 0.7)
        assert len(np.unique(idx)) == 32 and np.all(np.diff(idx) > 0)
        share.append(np.isin(idx, paintings).mean())
    assert abs(np.mean(share) - 0.7) < 0.01
    plain = [np.isin(draw_batch(rng, 1000, 32), paintings).mean() for _ in range(2000)]
    assert abs(np.mean(plain) - 0.1) < 0.01
    small = draw_batch(rng, 40, 32, (np.arange(25), np.arange(25, 40)), 1.0)
    np.testing.assert_array_equal(small[:25], np.arange(25))
    assert len(np.unique(small)) == 32 and set(small[25:]) <= set(range(25, 40))


@needs_assets
def test_distillation_reads_only_training_images(tmp_path, monkeypatch, capsys, request):
    """Run the real bank, teacher-target and extra-bank builders on a small assets tree and record
    every image read."""
    from stylecast.model import distill
    from stylecast.model.teacher import Teacher

    root = tmp_path / "assets"
    (root / "content").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "models" / "magenta").symlink_to(ASSETS / "models" / "magenta")
    (root / "styles").mkdir()
    for p in data.train_styles(ASSETS)[:4] + data.heldout_styles(ASSETS)[:2]:
        (root / "styles" / p.name).symlink_to(p)
    for split in ("train", "val"):
        (root / "content" / split).mkdir()
        for p in sorted((ASSETS / "content" / split).iterdir())[:3]:
            (root / "content" / split / p.name).symlink_to(p)
    read: list[Path] = []
    real = data.load_rgb
    monkeypatch.setattr(data, "load_rgb", lambda p, *a, **k: read.append(Path(p)) or real(p, *a, **k))
    work = tmp_path / "work"
    work.mkdir()
    teacher = Teacher(root / "models" / "magenta")
    request.addfinalizer(teacher.close)
    distill.build_style_bank(root, teacher, work, per_image=1, seed=0)
    distill.build_transfer_cache(root, teacher, work, count=4, seed=0)
    distill.build_extra_bank(root, teacher, work, per_painting=2, mosaics=13, seed=0, novel=3)
    names = {p.name for p in read}
    assert names, "the builders read no image"
    assert not names & set(data.HELDOUT_STYLES)
    assert not names & {p.name for p in (root / "content" / "val").iterdir()}
    assert np.load(work / "t_target.npy").shape == (4, 384, 384, 3)
    extra = np.load(work / "x_vectors.npy")
    assert extra.shape == (4 + 4 * 2 + 13 + 3, 100) and np.all(np.abs(extra).sum(1) > 0)
    # the novel-style images are teacher outputs labelled by the teacher: each row is its image's vector
    novel = np.load(work / "x_images.npy")[-3:]
    np.testing.assert_allclose(teacher.predict_style(to_float(novel)), extra[-3:], atol=1e-5)
    # the rows made from the paintings themselves: 4 × 2 recoloured crops and 13 mosaics, after the
    # 4 teacher outputs and before the 3 novel styles
    np.testing.assert_array_equal(np.flatnonzero(np.load(work / "x_is_painting.npy")), np.arange(4, 4 + 8 + 13))

    # A predictor of another shape trains on those banks (7 + 25 samples: one batch of 32) into its
    # own folder; the committed predictor, the transformer's feature net, stays as it was.
    committed = (distill.CHECKPOINTS / "predictor.keras").read_bytes()
    out = tmp_path / "predictor"
    distill.main(["--phase", "predictor", "--workdir", str(work), "--assets", str(root), "--threads", "1",
                  "--predictor-widths", "8,16", "--predictor-strides", "4,4", "--predictor-hidden", "16",
                  "--predictor-steps", "2", "--save-every", "1", "--predictor-out", str(out)])
    import keras

    net = keras.saving.load_model(out / "predictor.keras", compile=False)
    assert [net.get_layer(n).filters for n in ("stem", "b0_pw")] == [8, 16]
    assert net.get_layer("hidden").units == 16 and net.output.shape[-1] == 100
    meta = json.loads((out / "predictor.json").read_text())
    assert meta["step"] == 2 and meta["spec"]["widths"] == [8, 16] and len(meta["mean_vector"]) == 100
    assert (distill.CHECKPOINTS / "predictor.keras").read_bytes() == committed
    # Resumed from its step-2 checkpoint, the run drops curve rows a stopped run logged past it.
    (work / "predictor_log.csv").write_text("step,loss,centred_cos,time\n1,1.0,0.5,0\n20,1.0,0.5,0\n")
    distill.main(["--phase", "predictor", "--workdir", str(work), "--assets", str(root), "--threads", "1",
                  "--predictor-widths", "8,16", "--predictor-strides", "4,4", "--predictor-hidden", "16",
                  "--predictor-steps", "3", "--save-every", "1", "--predictor-out", str(out)])
    assert (work / "predictor_log.csv").read_text().splitlines()[1:] == ["1,1.0,0.5,0"]
    assert json.loads((out / "predictor.json").read_text())["step"] == 3
    with pytest.raises(SystemExit):  # one stride per width, refused before any work
        distill.main(["--phase", "predictor", "--workdir", str(work), "--assets", str(root),
                      "--predictor-widths", "8,16", "--predictor-strides", "4"])

    # The hint on the teacher's insides: refused until its features are banked; then row i holds
    # the teacher predictor's pooled features of image i, whose 1×1 convolution is the style vector.
    hint = ["--phase", "predictor", "--workdir", str(work), "--assets", str(root), "--threads", "1",
            "--predictor-widths", "8,16", "--predictor-strides", "4,4", "--predictor-hidden", "16",
            "--save-every", "1", "--predictor-out", str(out), "--w-bottleneck", "1"]
    with pytest.raises(SystemExit, match="--phase features"):
        distill.main([*hint, "--predictor-steps", "4"])
    distill.main(["--phase", "features", "--workdir", str(work), "--assets", str(root), "--threads", "1"])
    feats = np.load(work / "x_features.npy")
    images = np.load(work / "x_images.npy", mmap_mode="r")
    assert feats.shape == (len(extra), 1280) and feats.dtype == np.float16
    assert np.load(work / "style_features.npy").shape == (len(np.load(work / "style_vectors.npy")), 1280)
    np.testing.assert_allclose(feats[3], teacher.bottleneck(to_float(images[3:4]))[0], atol=2e-3)  # fp16 storage
    assert 0 <= feats.min() and feats.max() <= 6 and feats.any()
    distill.main([*hint, "--predictor-steps", "4"])
    assert (work / "ckpt" / "predictor_head.weights.h5").exists()
    net = keras.saving.load_model(out / "predictor.keras", compile=False)
    assert [l.name for l in net.layers if "bottleneck" in l.name] == [] and net.output.shape[-1] == 100
    meta = json.loads((out / "predictor.json").read_text())
    assert meta["step"] == 4 and meta["w_bottleneck"] == 1
    distill.main([*hint, "--predictor-steps", "20"])  # the curve gets a row every 20 steps
    row = (work / "predictor_log.csv").read_text().splitlines()[-1].split(",")
    assert row[0] == "20" and np.isfinite(float(row[1])) and -1 <= float(row[2]) <= 1

    # The v4 transformer phase learns the cached teacher targets (backend-agnostic Keras) into its
    # own folder, resumably; the committed transformer stays as it was.
    committed = (distill.CHECKPOINTS / "transformer.keras").read_bytes()
    tout = tmp_path / "transformer"
    phase = ["--phase", "transformer", "--workdir", str(work), "--assets", str(root), "--threads", "1",
             "--batch", "2", "--crop", "64", "--save-every", "1", "--transformer-out", str(tout)]
    distill.main([*phase, "--transformer-steps", "2"])
    first = keras.saving.load_model(tout / "transformer.keras", compile=False).get_weights()
    capsys.readouterr()
    distill.main([*phase, "--transformer-steps", "20"])
    assert "transformer: resumed from" in capsys.readouterr().out
    assert json.loads((tout / "transformer.json").read_text())["step"] == 20
    trained = keras.saving.load_model(tout / "transformer.keras", compile=False).get_weights()
    assert any(np.abs(a - b).max() > 0 for a, b in zip(first, trained))  # steps 3-20 moved the weights
    assert all(np.isfinite(w).all() for w in trained)
    header, *rows = (work / "transformer_log.csv").read_text().splitlines()
    row = dict(zip(header.split(","), rows[-1].split(",")))
    assert row["step"] == "20" and float(row["l1"]) > 0 and 0 < float(row["psnr"]) < 60
    assert (distill.CHECKPOINTS / "transformer.keras").read_bytes() == committed
    # A fixed painting share draws on the banks' painting marks: refused without them, then trains on.
    share = ["--phase", "predictor", "--workdir", str(work), "--assets", str(root), "--threads", "1",
             "--predictor-widths", "8,16", "--predictor-strides", "4,4", "--predictor-hidden", "16",
             "--save-every", "1", "--predictor-out", str(out), "--painting-share", "0.7"]
    marks = (work / "x_is_painting.npy").read_bytes()
    (work / "x_is_painting.npy").unlink()
    with pytest.raises(SystemExit, match="painting marks"):
        distill.main([*share, "--predictor-steps", "24"])
    (work / "x_is_painting.npy").write_bytes(marks)
    distill.main([*share, "--predictor-steps", "24"])
    assert json.loads((out / "predictor.json").read_text())["step"] == 24
    with pytest.raises(SystemExit):  # a share is a fraction, refused before any work
        distill.main([*share[:-1], "1.5"])


# ------------------------------------------------------------------ exporter fidelity

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small Keras pair with non-trivial style projections, exported to every format."""
    import keras

    from stylecast.model.export import export_package
    from stylecast.model.networks import (ConditionalInstanceNorm, PredictorSpec, TransformerSpec,
                                          build_predictor, build_transformer)

    keras.utils.set_random_seed(3)
    t = build_transformer(TransformerSpec(stem=8, mid=16, deep=32, blocks=2, expand=2))
    p = build_predictor(PredictorSpec(widths=(8, 16, 32, 64), strides=(2, 2, 4, 2), hidden=64))
    rng = np.random.default_rng(3)
    for layer in t.layers:
        if isinstance(layer, ConditionalInstanceNorm):
            layer.proj.kernel.assign(rng.normal(0, 0.2, layer.proj.kernel.shape).astype("float32"))
    pkg = export_package(p, t, tmp_path_factory.mktemp("pkg"), "probe", "1")
    return p, t, pkg


def _run(pkg, fmt, content, style, images):
    name = {"savedmodel": "savedmodel", "onnx": "onnx"}.get(fmt, "litert")
    backend = create_backend(name)
    backend.load(pkg, BackendOptions(format=fmt, threads=1))
    try:
        return backend.stylize(content, style), backend.predict_style(images)
    finally:
        backend.close()


@pytest.mark.parametrize("fmt", list(TOLERANCE))
def test_every_format_agrees_with_keras(exported, fmt):
    p, t, pkg = exported
    rng = np.random.default_rng(0)
    content = rng.random((2, 48, 80, 3), np.float32)
    style = rng.normal(0, 1, (2, 100)).astype(np.float32)
    images = rng.random((2, 256, 256, 3), np.float32)
    want_img = np.asarray(t([content, style], training=False))
    want_vec = np.asarray(p(images, training=False))
    got_img, got_vec = _run(pkg, fmt, content, style, images)
    assert got_img.shape == want_img.shape
    assert np.abs(got_img - want_img).max() <= TOLERANCE[fmt]
    scale = np.abs(want_vec).max()
    assert np.abs(got_vec - want_vec).max() <= TOLERANCE[fmt] * max(1.0, scale) * 4


def test_style_vector_changes_the_output(exported):
    _, t, _ = exported
    content = np.random.default_rng(1).random((1, 32, 32, 3), np.float32)
    a = np.asarray(t([content, np.zeros((1, 100), np.float32)]))
    b = np.asarray(t([content, np.ones((1, 100), np.float32)]))
    assert np.abs(a - b).mean() > 1e-3


# ------------------------------------------------------------------ the committed built-in package

@pytest.mark.parametrize("name", TIERS)
def test_builtin_manifest_verifies_and_a_corrupt_chunk_is_detected(tmp_path, name):
    pkg = builtin_package(name)
    pkg.verify()
    assert set(pkg.artifacts) >= {"tflite-fp32", "tflite-fp16", "tflite-int8", "onnx"}
    assert pkg.style_dim == 100
    copy = tmp_path / pkg.name / pkg.version
    shutil.copytree(pkg.path, copy)
    target = copy / pkg.artifact("tflite-int8").files[-1].path
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(PackageError, match="chunk 0 sha256 mismatch"):
        load_package(copy).verify(["tflite-int8"])
    load_package(copy).verify(["tflite-fp32"])  # the other formats still verify


@pytest.mark.parametrize("name", TIERS)
@pytest.mark.parametrize("fmt", ["tflite-fp32", "tflite-fp16", "tflite-int8"])
def test_builtin_tflite_runs_as_one_xnnpack_partition(fmt, name):
    pkg = builtin_package(name)
    for entry in pkg.artifact(fmt).files:
        for sig, part in xnnpack_partitions(pkg.file_path(entry.path)).items():
            assert part.single, f"{entry.path} [{sig}]: {part}"


@pytest.mark.parametrize("name", TIERS)
@pytest.mark.parametrize("fmt", ["tflite-int8", "tflite-fp32"])
def test_builtin_odd_sizes_and_batches(fmt, name):
    pkg = builtin_package(name)
    backend = create_backend("litert")
    backend.load(pkg, BackendOptions(format=fmt, threads=1))
    try:
        rng = np.random.default_rng(0)
        content = rng.random((3, 250, 333, 3), np.float32)
        styles = backend.predict_style(rng.random((3, 256, 256, 3), np.float32))
        assert styles.shape == (3, 100)
        batch = backend.stylize(content, styles)
        assert batch.shape == (3, 250, 333, 3) and 0.0 <= batch.min() and batch.max() <= 1.0
        singles = np.concatenate([backend.stylize(content[i:i + 1], styles[i:i + 1]) for i in range(3)])
        np.testing.assert_allclose(batch, singles, atol=1e-4)
        assert np.abs(batch[0] - backend.stylize(content[:1], styles[1:2])[0]).mean() > 1e-3
        for h, w in ((17, 31), (64, 48)):
            assert backend.stylize(content[:1, :h, :w], styles[:1]).shape == (1, h, w, 3)
    finally:
        backend.close()


@pytest.fixture(scope="module")
def quality_keras():
    """The quality tier's committed checkpoint in Keras: (predictor, student)."""
    import keras

    from stylecast.model.recipe import load_student

    student, _ = load_student(QUALITY_CHECKPOINT)
    return keras.saving.load_model(QUALITY_CHECKPOINT / "predictor.keras", compile=False), student


@pytest.mark.parametrize("fmt", ["onnx", "tflite-fp32", "tflite-fp16", "tflite-int8"])
def test_quality_tier_package_is_its_committed_checkpoint(quality_keras, fmt):
    """Every format of the shipped quality tier against the committed Keras networks it was
    exported from (``make export-quality``): a package left behind by a newer checkpoint fails."""
    pkg = builtin_package(QUALITY_MODEL)
    assert pkg.extra["training"]["steps"] == json.loads((QUALITY_CHECKPOINT / "student.json").read_text())["steps"]
    predictor, student = quality_keras
    images = to_float(np.stack([picture(256, 256, seed=s) for s in (1, 2)]))
    content = to_float(np.stack([picture(96, 64, seed=s) for s in (3, 4)]))  # multiples of 16: no edge padding
    want_vec = np.asarray(predictor(images, training=False))
    want_img = np.asarray(student([content, want_vec], training=False))
    got_img, got_vec = _run(pkg, fmt, content, want_vec, images)
    assert np.abs(got_img - want_img).max() <= QUALITY_TOLERANCE[fmt][0]
    assert np.abs(got_vec - want_vec).max() <= QUALITY_TOLERANCE[fmt][1]


@pytest.mark.parametrize("name", ["", QUALITY_MODEL])
async def test_serve_runs_the_real_time_tier_by_default_and_the_quality_tier_by_name(tmp_path, name):
    """A real server on the built-in models: no model named serves the real-time tier, ``model=
    stylecast-quality`` (``stylecast serve --model``) the quality tier, and the answered frame is
    that package's own output for the registered style (uint8, within 2 levels of rounding)."""
    style_img, frame = picture(160, 128, seed=5), picture(96, 64, seed=6)
    async with running_servers(BUILTIN_DIR, tmp_path) as start_server:
        server = await start_server(model=name, quality_sample_every=0)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.StyleTransferStub(channel)
            style = await register(stub, style_img)
            res = (await stub.StylizeImage(pb.StylizeImageRequest(
                config=pb.StreamConfig(style_id=style.id, output=pb.OutputOptions(encoding=pb.ENCODING_RAW_RGB24)),
                image=raw_image(frame)))).result
    pkg = builtin_package(name or BUILTIN_MODEL)
    assert (res.model, res.model_version) == (pkg.name, pkg.version)
    backend = create_backend("litert")
    backend.load(pkg, BackendOptions(format="tflite-fp32", threads=1))  # the test servers' format
    try:
        vector = backend.predict_style(style_image(Image.fromarray(style_img))[None])
        want = to_uint8(backend.stylize(to_float(frame)[None], vector)[0])
    finally:
        backend.close()
    got = decode_result(res.image)
    assert got.shape == want.shape and np.abs(got.astype(int) - want).max() <= 2


# ------------------------------------------------------------------ evaluation metrics

def test_evaluation_metrics_on_known_cases():
    from stylecast.model.quality import centred_cos, gray_ssim, psnr

    rng = np.random.default_rng(0)
    img = rng.random((64, 80, 3))
    assert gray_ssim(img, img) == pytest.approx(1.0)
    assert gray_ssim(img, rng.random((64, 80, 3))) < 0.1
    assert psnr(img, np.clip(img + 0.1, 0, 1)) == pytest.approx(20.0, abs=1.5)
    mean = rng.normal(0, 1, 100)
    v = rng.normal(0, 1, 100)
    # centring removes the shared mean: only the direction away from it counts
    assert abs(centred_cos(mean + 1e-6 * v, mean + v, mean)) == pytest.approx(1.0)
    assert centred_cos(mean + v, mean - v, mean) == pytest.approx(-1.0)
