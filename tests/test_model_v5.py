"""The v5 student and its recipe: eval measures with known answers, the student's pieces,
exported formats against Keras, XNNPACK partitioning, odd sizes and batches, the recipe's
shift pairs, its training split, and a short resumable training run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from stylecast.backends.base import BackendOptions, create_backend
from stylecast.model.xnnpack import xnnpack_partitions
from stylecast.model import data
from stylecast.model.quality import SHIFTS, border_score, flicker

ASSETS = data.assets_dir()
# The recipe and the Keras teacher read the teacher's fp16 file (teacher_port.TEACHER_F16).
needs_assets = pytest.mark.skipif(not (ASSETS / "models" / "magenta" / "style_transfer_f16_384.tflite").is_file(),
                                  reason=f"the teacher's fp16 file not found under {ASSETS} (../shared/assets)")
TOLERANCE = {"savedmodel": 1e-5, "onnx": 1e-4, "tflite-fp32": 1e-4, "tflite-fp16": 3e-2, "tflite-int8": 6e-2}


# ------------------------------------------------------------------ flicker and border

def test_flicker_is_zero_for_a_steady_network_and_known_for_a_fixed_pattern():
    rng = np.random.default_rng(0)
    strip = rng.random((64, 64 + max(SHIFTS), 3))
    assert flicker(lambda f: f, strip) == pytest.approx(0.0, abs=1e-9)
    assert flicker(lambda f: 1.0 - f ** 2, strip) == pytest.approx(0.0, abs=1e-9)  # any per-pixel map
    # A pattern fixed to the frame (odd columns +a) does not move with the scene: a pan by an
    # odd number of px misplaces it everywhere (|Δ| = a), an even one nowhere.
    a = 0.1
    pattern = lambda f: f + a * (np.arange(f.shape[1]) % 2)[None, :, None]  # noqa: E731
    odd = sum(d % 2 for d in SHIFTS) / len(SHIFTS)
    assert flicker(pattern, strip) == pytest.approx(a * 255 * odd, rel=1e-9)
    # A network that ignores the input's position entirely (a constant) is steady too.
    assert flicker(lambda f: np.full_like(f, 0.3), strip) == pytest.approx(0.0, abs=1e-9)


def test_border_score_measures_a_band_at_the_frame_edge():
    img = np.full((64, 96, 3), 0.5)
    assert border_score(img) == pytest.approx(0.0, abs=1e-9)
    band = img.copy()
    band[:8], band[-8:], band[:, :8], band[:, -8:] = 0.3, 0.3, 0.3, 0.3
    assert border_score(band) == pytest.approx(0.2 * 255)
    # Only the ring counts: a change deeper inside leaves the score alone.
    deep = img.copy()
    deep[20:40, 30:60] = 0.9
    assert border_score(deep) == pytest.approx(0.0, abs=1e-9)
    one_channel = img.copy()
    one_channel[:8, :, 0] = 0.8  # top band in red only: ring mean of red moves by 0.3 × top share
    top_share = (8 * 96) / (64 * 96 - 48 * 80)
    assert border_score(one_channel) == pytest.approx(0.3 * top_share * 255 / 3)


# ------------------------------------------------------------------ the student

# Small students of both tiers' shapes: the real-time tier's light encoder and decoder, and the
# quality tier's (encoder with a 3×3 conv at H/2, the teacher-shaped two-stage decoder, at its
# real full-resolution width of 8 channels).
SMALL_SPECS = {"light": dict(blocks=2, block="full", stem=8, trunk=16),
               "full": dict(blocks=2, block="full", stem=8, trunk=16, encoder="full", decoder="full"),
               "mirror": dict(blocks=2, block="full", stem=8, trunk=16, encoder="full", decoder="full", pad="mirror")}


@pytest.mark.parametrize("before, after", [(1, 1), (0, 1), (1, 0)])
def test_mirror_pad_is_numpys_reflect_padding(before, after):
    """MirrorPad (slices and concatenations, for XNNPACK) pads as ``np.pad(mode="reflect")``."""
    from stylecast.model.networks import MirrorPad

    x = np.random.default_rng(1).random((2, 5, 7, 3), np.float32)
    want = np.pad(x, ((0, 0), (before, after), (before, after), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(np.asarray(MirrorPad(before, after)(x)), want)


def test_a_mirror_padded_student_keeps_the_frames_size_and_wider_pads_are_refused():
    """Every mirror-padded convolution pads as ``same`` would (the output is the input's size);
    MirrorPad refuses more than 1 px a side."""
    from stylecast.model.networks import MirrorPad, StudentSpec, build_student

    student = build_student(StudentSpec(**SMALL_SPECS["mirror"]))
    assert np.asarray(student([np.zeros((1, 20, 36, 3), np.float32), np.zeros((1, 100), np.float32)])).shape == (1, 20, 36, 3)
    with pytest.raises(ValueError, match="0 or 1 px"):
        MirrorPad(2, 0)


@pytest.fixture(scope="module", params=list(SMALL_SPECS))
def student(request):
    import keras

    from stylecast.model.networks import ConditionalInstanceNorm, StudentSpec, build_student

    keras.utils.set_random_seed(7)
    spec = StudentSpec(**SMALL_SPECS[request.param])
    model = build_student(spec)
    rng = np.random.default_rng(7)
    for layer in model.layers:  # fresh projections barely move the output: make the style matter
        if isinstance(layer, ConditionalInstanceNorm):
            layer.proj.kernel.assign(rng.normal(0, 0.2, layer.proj.kernel.shape).astype("float32"))
    return spec, model


def test_student_pieces_compose_to_the_whole_and_share_its_weights(student):
    from stylecast.model.networks import student_parts, teacher_hints

    spec, model = student
    parts = student_parts(model, spec)
    rng = np.random.default_rng(1)
    x = rng.random((2, 40, 56, 3), np.float32)
    s = rng.normal(0, 1, (2, 100)).astype(np.float32)
    h = np.asarray(parts["encoder"]([x, s]))
    assert h.shape == (2, 10, 14, spec.trunk)
    for k in range(1, spec.blocks + 1):
        h = np.asarray(parts[f"res{k}"]([h, s]))
    # two student blocks stand for the teacher's five: blocks 1-2 and 3-5
    hints = {"encoder": ("content", "trunk_in"), "res1": ("trunk_in", "res2"), "res2": ("res2", "res5")}
    if spec.decoder == "full":
        h = np.asarray(parts["up1"]([h, s]))
        assert h.shape == (2, 20, 28, spec.stem)
        h = np.asarray(parts["up2"]([h, s]))
        assert h.shape == (2, 40, 56, spec.fine)
        decoder = parts["head"]
        hints.update(up1=("res5", "up1"), up2=("up1", "up2"), head=("up2", "stylized"))
    else:
        decoder = parts["decoder"]
        hints["decoder"] = ("res5", "stylized")
    np.testing.assert_allclose(np.asarray(decoder([h, s])), np.asarray(model([x, s])), atol=1e-5)
    assert {v.path for v in decoder.weights} <= {v.path for v in model.weights}
    assert sum(len(p.weights) for p in parts.values()) == len(model.weights)  # every weight in one piece
    assert teacher_hints(spec) == hints


@needs_assets
@pytest.mark.parametrize("name", ["rt3", "q5d", "q5de"])
def test_hints_and_taps_match_the_teachers_shapes(name):
    """Each block-by-block piece reads a teacher tap of its input's shape and writes one of its
    output's; each end-to-end tap's student layer has its teacher tap's shape."""
    import keras

    from stylecast.model.networks import CANDIDATES, build_student, student_parts, student_taps, teacher_hints
    from stylecast.model.teacher_port import TEACHER_F16, build_teacher

    spec = CANDIDATES[name]
    rng = np.random.default_rng(4)
    x = rng.random((1, 48, 64, 3), np.float32)
    s = rng.normal(0, 1, (1, 100)).astype(np.float32)
    t = build_teacher(ASSETS / "models" / "magenta" / TEACHER_F16, features=True)([x, s])
    t = {"content": x, **{k: np.asarray(v) for k, v in t.items()}}
    model = build_student(spec)
    parts = student_parts(model, spec)
    for part, (src, dst) in teacher_hints(spec).items():
        assert np.asarray(parts[part]([t[src], s])).shape == t[dst].shape, part
    taps = student_taps(spec)
    assert set(taps.values()) >= {"trunk_in", "res5", "up1"} and ("up2" in taps.values()) == (spec.decoder == "full")
    outs = keras.Model(model.inputs, [model.get_layer(n).output for n in taps])([x, s])
    for (layer, tap), out in zip(taps.items(), outs):
        assert tuple(out.shape) == t[tap].shape, layer


@pytest.fixture(scope="module")
def student_package(student, tmp_path_factory):
    from stylecast.model.export import export_package
    from stylecast.model.networks import PredictorSpec, build_predictor

    _, model = student
    predictor = build_predictor(PredictorSpec(widths=(8, 16, 32, 64), strides=(2, 2, 4, 2), hidden=64))
    return predictor, export_package(predictor, model, tmp_path_factory.mktemp("v5"), "student", "1")


@pytest.mark.parametrize("fmt", list(TOLERANCE))
def test_student_every_format_agrees_with_keras(student, student_package, fmt):
    _, model = student
    _, pkg = student_package
    rng = np.random.default_rng(0)
    content = rng.random((2, 48, 80, 3), np.float32)
    style = rng.normal(0, 1, (2, 100)).astype(np.float32)
    backend = create_backend({"savedmodel": "savedmodel", "onnx": "onnx"}.get(fmt, "litert"))
    backend.load(pkg, BackendOptions(format=fmt, threads=1))
    try:
        got = backend.stylize(content, style)
    finally:
        backend.close()
    want = np.asarray(model([content, style]))
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= TOLERANCE[fmt]
    assert np.abs(want[0] - np.asarray(model([content[:1], style[1:]]))[0]).mean() > 1e-3  # style matters


@pytest.mark.parametrize("fmt", ["tflite-fp32", "tflite-fp16", "tflite-int8"])
def test_student_tflite_files_are_one_xnnpack_partition_each(student_package, fmt):
    _, pkg = student_package
    for entry in pkg.artifact(fmt).files:
        for sig, part in xnnpack_partitions(pkg.file_path(entry.path)).items():
            assert part.single, f"{entry.path} [{sig}]: {part}"


@pytest.mark.parametrize("fmt", ["tflite-int8", "tflite-fp32"])
def test_student_odd_sizes_and_batches(student_package, fmt):
    _, pkg = student_package
    backend = create_backend("litert")
    backend.load(pkg, BackendOptions(format=fmt, threads=1))
    try:
        rng = np.random.default_rng(2)
        content = rng.random((3, 37, 61, 3), np.float32)
        styles = rng.normal(0, 1, (3, 100)).astype(np.float32)
        batch = backend.stylize(content, styles)
        assert batch.shape == (3, 37, 61, 3) and 0.0 <= batch.min() and batch.max() <= 1.0
        singles = np.concatenate([backend.stylize(content[i:i + 1], styles[i:i + 1]) for i in range(3)])
        np.testing.assert_allclose(batch, singles, atol=1e-4)
    finally:
        backend.close()


# ------------------------------------------------------------------ the recipe

def _tiny_pack(tmp_path: Path) -> Path:
    """A pack of three synthetic photos and a small vector bank (no teacher graph)."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    blobs = []
    for h, w in ((90, 120), (100, 100), (80, 140)):
        buf = io.BytesIO()
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
    path = tmp_path / "pack"
    path.mkdir()
    np.savez(path / "crops.npz", bytes=np.concatenate(blobs), offsets=np.cumsum([0] + [len(b) for b in blobs]))
    np.savez(path / "styles.npz", vectors=rng.normal(0, 1, (6, 100)).astype(np.float32),
             kinds=np.array([0, 0, 0, 0, 1, 1], np.int8))
    return path


def test_batches_are_seeded_and_their_second_half_is_the_first_moved(tmp_path):
    from stylecast.model.recipe import Pack, make_batch

    pack = Pack(_tiny_pack(tmp_path))
    content, style, shift = make_batch(pack, step=3, seed=1, pairs=2, crop=48)
    again = make_batch(pack, step=3, seed=1, pairs=2, crop=48)
    np.testing.assert_array_equal(content, again[0])
    assert not np.array_equal(content, make_batch(pack, step=4, seed=1, pairs=2, crop=48)[0])
    assert content.shape == (4, 48, 48, 3) and style.shape == (4, 100)
    np.testing.assert_array_equal(style[:2], style[2:])
    dy, dx = shift[0]
    assert (dy, dx) != (0, 0) and np.all(shift == shift[0])
    for i in range(2):  # b[y, x] = a[y + dy, x + dx] wherever both exist
        a, b = content[i], content[2 + i]
        ys, xs = slice(max(0, -dy), 48 - max(0, dy)), slice(max(0, -dx), 48 - max(0, dx))
        ys_a, xs_a = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
        np.testing.assert_array_equal(b[ys, xs], a[ys_a, xs_a])


@needs_assets
def test_recipe_pack_reads_only_training_images_and_a_short_run_resumes(tmp_path, monkeypatch):
    """Build a real pack from a small assets tree (recording every image read), then train two
    steps of each stage, then two more of the second: the run resumes from its checkpoint."""
    from PIL import Image

    from stylecast.model import recipe

    root = tmp_path / "assets"
    (root / "models").mkdir(parents=True)
    (root / "models" / "magenta").symlink_to(ASSETS / "models" / "magenta")
    (root / "styles").mkdir()
    for p in data.train_styles(ASSETS)[:2] + data.heldout_styles(ASSETS)[:2]:
        (root / "styles" / p.name).symlink_to(p)
    for split in ("train", "val"):
        (root / "content" / split).mkdir(parents=True)
        for p in sorted((ASSETS / "content" / split).iterdir())[:3]:
            (root / "content" / split / p.name).symlink_to(p)
    read: list[str] = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda p, *a, **k: read.append(Path(str(p)).name) or real_open(p, *a, **k))
    pack = tmp_path / "pack"
    recipe.build_pack(root, pack, seed=0, crops_per_painting=2, photo_styles=2)
    monkeypatch.setattr(Image, "open", real_open)
    assert read, "the pack builder read no image"
    assert not set(read) & set(data.HELDOUT_STYLES)
    assert not set(read) & {p.name for p in (root / "content" / "val").iterdir()}
    styles = np.load(pack / "styles.npz")
    assert styles["vectors"].shape == (2 * 2 + 2, 100)

    out = tmp_path / "run"
    args = ["--pack", str(pack), "--out", str(out), "--spec", "rt3", "--pairs", "1", "--crop", "48",
            "--block-crop", "32", "--block-steps", "2", "--save-every", "1", "--threads", "1"]
    recipe.main(args + ["--e2e-steps", "2"])
    meta = json.loads((out / "student.json").read_text())
    assert meta["spec"] == "rt3" and meta["steps"] == {"blocks": 2, "e2e": 2}
    assert meta["schedule"]["e2e"] == {"start": 0, "end": 2, "lr": 5e-4}
    weights = {**recipe.TERM_WEIGHTS}
    assert meta["history"] == [{"stage": "blocks", "from": 0, "start": 0, "end": 2, "lr": 1e-3, "weights": None},
                               {"stage": "e2e", "from": 0, "start": 0, "end": 2, "lr": 5e-4, "weights": weights}]
    first = (out / "student.weights.h5").read_bytes()
    # The curve as a run leaves it when stopped after logging steps its last checkpoint (2) lacks:
    # resumed at step 2, the run drops those rows, since it trains (and logs) those steps again.
    fields = ["stage", "step", "loss", "lr", "hint_w", "terms", "s_per_step", "time"]
    with open(out / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for stage, st in [("blocks", 2), ("blocks", 10), ("e2e", 2), ("e2e", 3), ("e2e", 30)]:
            w.writerow({"stage": stage, "step": st, "loss": 1.0, "lr": 1e-3, "hint_w": 1, "terms": "",
                        "s_per_step": 0.1, "time": 0})
    # Asked for more steps than the finished schedule: a new cosine segment from step 2 to 4.
    recipe.main(args + ["--e2e-steps", "4", "--w-mse", "20"])
    with open(out / "log.csv", newline="") as f:
        assert [(r["stage"], r["step"]) for r in csv.DictReader(f)] == [("blocks", "2"), ("blocks", "10"),
                                                                        ("e2e", "2")]
    meta = json.loads((out / "student.json").read_text())
    assert meta["steps"] == {"blocks": 2, "e2e": 4}
    assert meta["schedule"]["e2e"] == {"start": 2, "end": 4, "lr": 5e-4}
    assert meta["history"][-1] == {"stage": "e2e", "from": 2, "start": 2, "end": 4, "lr": 5e-4,
                                   "weights": {**weights, "mse": 20.0}}
    assert len(meta["history"]) == 3  # the first two entries stay
    assert (out / "student.weights.h5").read_bytes() != first
    assert (out / "optimizer_e2e.npz").exists()
    # The quality tier's candidate trains by name through the same recipe (its decoder's
    # stages get their own hints), and a run folder refuses another candidate's checkpoint.
    quality = tmp_path / "quality"
    q_args = ["--pack", str(pack), "--out", str(quality), "--spec", "q5d", "--pairs", "1", "--crop", "48",
              "--block-crop", "32", "--block-steps", "1", "--e2e-steps", "1", "--threads", "1", "--w-feat", "0"]
    recipe.main(q_args)
    assert json.loads((quality / "student.json").read_text())["steps"] == {"blocks": 1, "e2e": 1}
    # Once end-to-end training has started, more block steps asked for are not run (the block
    # stage trains the pieces apart, which would undo the end-to-end fit).
    recipe.main(q_args[:-8] + ["--block-steps", "3", "--e2e-steps", "2", "--threads", "1", "--w-feat", "0"])
    assert json.loads((quality / "student.json").read_text())["steps"] == {"blocks": 1, "e2e": 2}
    with pytest.raises(SystemExit, match="rt3 checkpoint"):
        recipe.main(q_args[:3] + [str(out)] + q_args[4:])


def test_export_of_a_run_without_a_checkpoint_is_refused_with_a_usage_error(tmp_path, capsys):
    """``make export-model`` before ``make train``: a usage error naming the folder, before
    Keras loads or any package folder is written."""
    from stylecast.model import recipe

    with pytest.raises(SystemExit) as exc:
        recipe.main(["--out", str(tmp_path / "run"), "--export", str(tmp_path / "pkgs")])
    assert exc.value.code == 2
    assert f"{tmp_path / 'run'} holds no checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "pkgs").exists()


def test_a_resumed_run_keeps_its_cosine_schedule_and_a_longer_one_starts_a_segment():
    from stylecast.model.recipe import resume_schedule, segment_cosine

    seg = {"start": 0, "end": 12000, "lr": 5e-4}
    meta = {"steps": {"e2e": 4000}, "schedule": {"e2e": seg}}
    assert resume_schedule(meta, "e2e", 4000, 12000, 1e-3) == seg  # same end: the same schedule
    assert resume_schedule(meta, "e2e", 4000, 6000, 1e-4) == {"start": 4000, "end": 6000, "lr": 1e-4}
    # A checkpoint from before schedules were recorded followed one that ended where it stopped.
    assert resume_schedule({"steps": {"e2e": 4000}}, "e2e", 4000, 4000, 5e-4)["end"] == 4000
    assert resume_schedule({"steps": {"e2e": 4000}}, "e2e", 4000, 4500, 5e-4)["start"] == 4000
    # The history gains an entry when the segment or the weights change, not on a plain resume.
    from stylecast.model.recipe import record_segment

    meta = {}
    record_segment(meta, "e2e", 0, seg, {"mse": 0.0})
    record_segment(meta, "e2e", 4000, seg, {"mse": 0.0})
    assert meta["history"] == [{"stage": "e2e", "from": 0, **seg, "weights": {"mse": 0.0}}]
    record_segment(meta, "e2e", 5000, seg, {"mse": 20.0})
    assert meta["history"][-1] == {"stage": "e2e", "from": 5000, **seg, "weights": {"mse": 20.0}}
    assert len(meta["history"]) == 2
    lr = segment_cosine(1e-3, 100, 300, alpha=0.02)
    at = lambda s: float(np.asarray(lr(s)))  # noqa: E731
    assert at(0) == pytest.approx(1e-3) and at(100) == pytest.approx(1e-3)
    assert at(200) == pytest.approx(1e-3 * (0.02 + 0.98 * 0.5), rel=1e-5)
    assert at(300) == pytest.approx(2e-5, rel=1e-4) and at(900) == pytest.approx(2e-5, rel=1e-4)
    assert all(at(s) > at(s + 10) for s in range(100, 300, 10))


def _blurred(imgs: np.ndarray, radius: float) -> np.ndarray:
    from PIL import Image, ImageFilter

    from stylecast.model.preprocess import to_float, to_uint8

    return np.stack([to_float(np.asarray(Image.fromarray(to_uint8(i)).filter(ImageFilter.GaussianBlur(radius))))
                     for i in imgs])


@pytest.mark.skipif(not (Path(__file__).parents[1] / "model" / "checkpoints" / "predictor.keras").exists(),
                    reason="model/checkpoints/predictor.keras missing")
def test_texture_terms_are_zero_for_the_same_image_and_grow_as_texture_is_blurred_away():
    from stylecast.model.recipe import FEAT_LAYERS, feature_extractor, feature_l1, local_stats_l1

    rng = np.random.default_rng(3)
    # Real-looking texture: noise at two scales on a smooth ramp.
    coarse = np.kron(rng.random((2, 8, 8, 3)), np.ones((1, 8, 8, 1)))
    img = (0.4 * coarse + 0.3 * rng.random((2, 64, 64, 3)) + 0.3 * np.linspace(0, 1, 64)[None, :, None, None])
    img = img.astype(np.float32)
    soft, softer = _blurred(img, 1.0), _blurred(img, 3.0)
    stat = [float(np.asarray(local_stats_l1(img, x))) for x in (img, soft, softer)]
    assert stat[0] == pytest.approx(0.0, abs=1e-6)
    assert 0 < stat[1] < stat[2]
    feats = feature_extractor()
    f0 = feats(img)
    assert len(f0) == len(FEAT_LAYERS) and f0[0].shape[:3] == (2, 16, 16)  # any size (not only 256²)
    feat = [float(np.asarray(feature_l1(f0, feats(x)))) for x in (img, soft, softer)]
    assert feat[0] == pytest.approx(0.0, abs=1e-6)
    assert 0 < feat[1] < feat[2]
    assert not any(w.trainable for w in feats.weights)


@needs_assets
def test_pixel_terms_are_the_weighted_l1_and_squared_error_to_the_teachers_picture():
    """The end-to-end graph's ``pixel`` and ``mse`` columns are their weights times the mean
    absolute and mean squared error between the student's picture and the teacher's; the
    squared-error term is off (0) unless a weight is given."""
    from stylecast.model import recipe
    from stylecast.model.networks import CANDIDATES, build_student
    from stylecast.model.teacher_port import TEACHER_F16, build_teacher

    spec = CANDIDATES["rt3"]
    student = build_student(spec)
    teacher = build_teacher(ASSETS / "models" / "magenta" / TEACHER_F16, features=True)
    rng = np.random.default_rng(6)
    content = rng.random((2, 48, 48, 3), np.float32)
    style = np.concatenate([rng.normal(0, 1, (1, 100))] * 2).astype(np.float32)
    inputs = [content, style, np.array([[2, -3]] * 2, np.int32), np.ones((2, 1), np.float32)]
    err = np.asarray(student([content, style])) - np.asarray(teacher([content, style])["stylized"])
    graph_class = recipe.distill_graph_class()
    terms = graph_class.E2E_TERMS
    weighted = np.asarray(graph_class(student, spec, teacher, "e2e", {"pixel": 2.0, "mse": 3.0}, 1, 48)(inputs))[0]
    assert weighted[terms.index("pixel")] == pytest.approx(2.0 * np.abs(err).mean(), rel=1e-4)
    assert weighted[terms.index("mse")] == pytest.approx(3.0 * np.square(err).mean(), rel=1e-4)
    assert weighted[terms.index("mse")] > 0
    default = np.asarray(graph_class(student, spec, teacher, "e2e", {}, 1, 48)(inputs))[0]
    assert default[terms.index("mse")] == 0.0
    assert default[terms.index("pixel")] == pytest.approx(weighted[terms.index("pixel")] / 2, rel=1e-4)


def test_count_macs_counts_each_convolution_once_at_its_output_size():
    import keras
    from keras import layers

    from stylecast.model.networks import CANDIDATES, build_student, count_macs

    image = keras.Input((None, None, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same")(image)       # 9 × (H/2 × W/2) × 3 × 8
    x = layers.DepthwiseConv2D(3, padding="same")(x)                 # 9 × (H/2 × W/2) × 8
    x = layers.Conv2D(4, 1)(x)                                       # 1 × (H/2 × W/2) × 8 × 4
    model = keras.Model(image, x)
    h, w = 32, 48
    assert count_macs(model, h, w) == (9 * 3 * 8 + 9 * 8 + 8 * 4) * (h // 2) * (w // 2)
    rt3 = build_student(CANDIDATES["rt3"])
    assert count_macs(rt3, 512, 512) / count_macs(rt3, 384, 384) == pytest.approx((512 / 384) ** 2, rel=0.01)


@pytest.mark.skipif(not (ASSETS / "content" / "val").is_dir() or not (ASSETS / "models" / "magenta").is_dir(),
                    reason=f"Magenta files and photos not found under {ASSETS} (../shared/assets)")
def test_eval_splits_the_pipeline_gap_with_the_teacher_fed_each_predictor(tmp_path):
    """``make eval-model``'s row ``teacher fed NAME's predictor``: for the Magenta pair itself (its
    predictor is the teacher's) it is the teacher's own row, and its outputs are the teacher's."""
    from stylecast.model.evaluate import evaluate
    from stylecast.model.magenta import import_magenta

    magenta = ASSETS / "models" / "magenta"
    pkg = import_magenta(magenta / "style_predict_quantized_256.tflite", magenta / "style_transfer_quantized_384.tflite",
                         tmp_path)
    rows = evaluate([pkg.path], "tflite-int8", ASSETS, threads=2, limit=1)
    fed, teacher = rows[f"teacher fed {pkg.name} v{pkg.version}'s predictor"], rows["teacher"]
    assert fed["style"] == teacher["style"] and fed["ssim"] == teacher["ssim"]
    assert fed["psnr"] > 100  # the same pixels: psnr() caps a zero error at 120 dB
    assert rows[f"{pkg.name} v{pkg.version} predictor"]["centred_cos_heldout"] == pytest.approx(1.0)
