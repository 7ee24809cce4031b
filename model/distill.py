"""Train the v4 built-in model by distillation from the Magenta teacher
(``python -m stylecast.model.distill``; ``make train-quality-predictor`` runs its predictor phases).

Resumable phases, all seeded, all reading ``../shared/assets`` (training split only):

1. ``bank``: augmented 256² crops of training photos and paintings, each labelled with the
   teacher's 100-d vector.
2. ``cache``: teacher targets for the transformer — 384² content crops × style vectors
   (training paintings, photos, blends, strength mixes), stylized once by
   ``style_transfer_quantized_384.tflite`` and kept on disk.
3. ``extra``: more teacher-labelled style inputs — the cached teacher outputs, recoloured
   paintings and painting mosaics — so the predictor sees more than 21 paintings' styles.
4. ``features``: the teacher predictor's pooled 1280-d features (its insides, one 1×1
   convolution before the vector) for every image of both banks, fp16.
5. ``predictor``: the student predictor regresses the teacher's vectors on both banks
   (centred-cosine + MSE loss), optionally with a hint: a training-only linear head on its
   hidden layer regresses the teacher's pooled features (``--w-bottleneck``).
6. ``transformer``: the student transformer learns the cached targets on aligned random
   crops with a pixel L1, an image-gradient L1, local colour statistics and a style
   term: feature statistics of the trained student predictor (a frozen, differentiable
   stand-in for the teacher's) on student vs teacher outputs.

Both networks train as backend-agnostic Keras (``keras.ops`` loss graphs,
``train_on_batch``), so any Keras backend runs phases 5 and 6; TensorFlow is touched only to
limit its thread pools when it is the backend.

Work files live in ``--workdir`` (default ``runs/distill``, not committed); small
checkpoints go to ``model/checkpoints/`` (``--predictor-out``, ``--transformer-out``: elsewhere)
so a later session can resume; the loss curve
is appended to ``<workdir>/<network>_log.csv`` (``predictor_log.csv``,
``transformer_log.csv``) and copied next to the checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from stylecast.model import curve, data
from stylecast.model.preprocess import style_image, style_image_uint8, to_float, to_uint8
from stylecast.model.teacher import BOTTLENECK_DIM, TEACHER_SIZE, Teacher
from stylecast.model.threads import limit_threads

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS = REPO / "model" / "checkpoints"


# ---------------------------------------------------------------- data banks

def _random_square(img: np.ndarray, rng: np.random.Generator, lo: float, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = int(min(h, w) * rng.uniform(lo, 1.0))
    y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
    crop = Image.fromarray(img[y:y + s, x:x + s]).resize((size, size), Image.BILINEAR)
    out = np.asarray(crop)
    return out[:, ::-1] if rng.random() < 0.5 else out


def build_style_bank(root: Path, teacher: Teacher, out: Path, per_image: int, seed: int) -> None:
    """Augmented 256² style inputs (uint8) + teacher vectors, for the predictor."""
    rng = np.random.default_rng(seed)
    paths = data.training_images(root)
    n = len(paths) * per_image
    images = np.lib.format.open_memmap(out / "style_images.npy", "w+", np.uint8, (n, 256, 256, 3))
    vectors = np.zeros((n, 100), np.float32)
    is_painting = np.zeros(n, bool)
    painting_names = {p.name for p in data.train_styles(root)}
    i = 0
    for path in tqdm(paths, desc="style bank"):
        img = data.load_rgb(path)
        for k in range(per_image):
            if k == 0:  # the exact serving preprocessing
                x = style_image_uint8(Image.fromarray(img))
            else:
                x = _random_square(img, rng, 0.45, 256)
            images[i] = x
            vectors[i] = teacher.predict_style(to_float(x[None]))[0]
            is_painting[i] = path.name in painting_names
            i += 1
    images.flush()
    np.save(out / "style_vectors.npy", vectors)
    np.save(out / "style_is_painting.npy", is_painting)


_RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ2RGB = np.linalg.inv(_RGB2YIQ).astype(np.float32)


def _recolour(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A new palette for the same brushwork: hue rotation, saturation and gamma (uint8 → uint8)."""
    yiq = to_float(img) @ _RGB2YIQ.T
    a = rng.uniform(-np.pi, np.pi)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]], np.float32)
    yiq = yiq @ rot.T
    yiq[..., 1:] *= rng.uniform(0.6, 1.5)
    return to_uint8(np.clip(yiq @ _YIQ2RGB.T, 0, 1) ** rng.uniform(0.7, 1.4))


def build_extra_bank(root: Path, teacher: Teacher, out: Path, per_painting: int, mosaics: int, seed: int,
                     novel: int = 0) -> None:
    """More predictor inputs, each labelled by the teacher: the cached teacher outputs (painterly
    images in known styles), recoloured training paintings, 2×2 mosaics of painting crops and
    ``novel`` teacher outputs in new styles (a training photo's 384² crop stylized with a vector
    drawn from a Gaussian with the style bank's mean and covariance, then a 256² crop of it).
    Only training images and the training-split cache are read; ``novel`` = 0 gives the same
    bank as before it existed (its draws come last). ``x_is_painting.npy`` marks the rows made
    from the paintings themselves (recoloured crops and mosaics), as ``style_is_painting.npy``
    does in the style bank."""
    rng = np.random.default_rng(seed)
    paintings = [data.load_rgb(p) for p in data.train_styles(root)]
    done = json.loads((out / "t_done.json").read_text())["done"]
    targets = np.load(out / "t_target.npy", mmap_mode="r")
    n = done + len(paintings) * per_painting + mosaics + novel
    images = np.lib.format.open_memmap(out / "x_images.npy", "w+", np.uint8, (n, 256, 256, 3))
    vectors = np.zeros((n, 100), np.float32)
    i = 0

    def add(x: np.ndarray) -> None:
        nonlocal i
        images[i], vectors[i] = x, teacher.predict_style(to_float(x[None]))[0]
        i += 1

    for k in tqdm(range(done), desc="extra bank: teacher outputs"):
        add(_random_square(np.asarray(targets[k]), rng, 0.5, 256))
    for img in tqdm(paintings, desc="extra bank: recoloured paintings"):
        for _ in range(per_painting):
            add(_recolour(_random_square(img, rng, 0.25, 256), rng))
    for _ in tqdm(range(mosaics), desc="extra bank: mosaics"):
        tiles = [_random_square(paintings[j], rng, 0.2, 128) for j in rng.integers(0, len(paintings), 4)]
        add(np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0))
    if novel:
        bank = np.load(out / "style_vectors.npy").astype(np.float64)
        centre, root_cov = bank.mean(0), np.linalg.cholesky(np.cov(bank.T) + 1e-6 * np.eye(bank.shape[1]))
        photos = data.train_content(root)
        for _ in tqdm(range(novel), desc="extra bank: teacher outputs in novel styles"):
            x = _random_square(data.load_rgb(photos[rng.integers(len(photos))]), rng, 0.6, TEACHER_SIZE)
            v = (centre + root_cov @ rng.standard_normal(bank.shape[1])).astype(np.float32)
            add(_random_square(to_uint8(teacher.stylize(to_float(x[None]), v[None])[0]), rng, 0.5, 256))
    images.flush()
    np.save(out / "x_vectors.npy", vectors)
    is_painting = np.zeros(n, bool)
    is_painting[done:done + len(paintings) * per_painting + mosaics] = True
    np.save(out / "x_is_painting.npy", is_painting)


def build_bottleneck_bank(teacher: Teacher, out: Path, batch: int = 64) -> None:
    """``style_features.npy`` / ``x_features.npy``: :meth:`Teacher.bottleneck` of every image in
    the style and extra banks (N×1280 fp16, row i for image i); a bank that is absent or already
    has its features is skipped."""
    for name in ("style", "x"):
        if not (out / f"{name}_images.npy").exists() or (out / f"{name}_features.npy").exists():
            continue
        images = np.load(out / f"{name}_images.npy", mmap_mode="r")
        feats = np.zeros((len(images), BOTTLENECK_DIM), np.float16)
        for i in tqdm(range(0, len(images), batch), desc=f"teacher features: {name} bank"):
            feats[i:i + batch] = teacher.bottleneck(to_float(np.asarray(images[i:i + batch])))
        np.save(out / f"{name}_features.npy", feats)


def build_transfer_cache(root: Path, teacher: Teacher, out: Path, count: int, seed: int) -> None:
    """384² content crops × style vectors → teacher outputs (uint8), resumable by index."""
    rng = np.random.default_rng(seed)
    vectors = np.load(out / "style_vectors.npy")
    painting = np.load(out / "style_is_painting.npy")
    paintings, photos = vectors[painting], vectors[~painting]
    paths = data.train_content(root)
    size = TEACHER_SIZE
    mode = "r+" if (out / "t_content.npy").exists() else "w+"
    content = np.lib.format.open_memmap(out / "t_content.npy", mode, np.uint8, (count, size, size, 3))
    target = np.lib.format.open_memmap(out / "t_target.npy", mode, np.uint8, (count, size, size, 3))
    styles = np.load(out / "t_styles.npy") if mode == "r+" else np.zeros((count, 100), np.float32)
    done_file = out / "t_done.json"
    done = json.loads(done_file.read_text())["done"] if done_file.exists() else 0
    # Draw every random choice up front so resuming gives the same samples.
    picks = rng.integers(0, len(paths), count)
    kinds = rng.choice(4, count, p=[0.6, 0.12, 0.16, 0.12])
    a, b = rng.integers(0, len(paintings), count), rng.integers(0, len(paintings), count)
    c = rng.integers(0, len(photos), count)
    mix = rng.uniform(0.2, 1.0, count)
    crop_seeds = rng.integers(0, 2**31, count)
    for i in tqdm(range(done, count), desc="teacher targets", initial=done, total=count):
        img = data.load_rgb(paths[picks[i]])
        x = _random_square(img, np.random.default_rng(crop_seeds[i]), 0.6, size)
        xf = to_float(x[None])
        if kinds[i] == 0:
            v = paintings[a[i]]
        elif kinds[i] == 1:
            v = photos[c[i]]
        elif kinds[i] == 2:  # strength < 1: blend with the content's own vector
            own = teacher.predict_style(style_image(Image.fromarray(x))[None])[0]
            v = mix[i] * paintings[a[i]] + (1 - mix[i]) * own
        else:  # two-style blend
            v = mix[i] * paintings[a[i]] + (1 - mix[i]) * paintings[b[i]]
        content[i], styles[i] = x, v
        target[i] = to_uint8(teacher.stylize(xf, v[None])[0])
        if (i + 1) % 100 == 0 or i + 1 == count:
            content.flush()
            target.flush()
            np.save(out / "t_styles.npy", styles)
            done_file.write_text(json.dumps({"done": i + 1}))


# ---------------------------------------------------------------- training

class Trainer:
    """Shared checkpoint/log plumbing for both networks."""

    def __init__(self, workdir: Path, name: str, model, lr: float, head=None, global_clipnorm: float | None = None):
        """``head``: a training-only Keras model trained beside ``model`` (its weights go to the
        resumable checkpoints, not to the finished network); ``global_clipnorm``: Adam clips the
        gradients' global norm to it."""
        import keras  # noqa: PLC0415

        self.workdir, self.name, self.model, self.head = workdir, name, model, head
        self.variables = model.trainable_variables + (head.trainable_variables if head else [])
        self.opt = keras.optimizers.Adam(lr, global_clipnorm=global_clipnorm)
        self.opt.build(self.variables)
        self.step = 0
        self.log_path = workdir / f"{name}_log.csv"

    def restore(self, *dirs: Path) -> bool:
        for d in dirs:
            meta = d / f"{self.name}.json"
            if meta.exists():
                self.model.load_weights(d / f"{self.name}.keras")
                if self.head is not None and (d / f"{self.name}_head.weights.h5").exists():
                    self.head.load_weights(d / f"{self.name}_head.weights.h5")
                opt = d / f"{self.name}.opt.npz"
                if opt.exists():
                    saved = np.load(opt)
                    for i, v in enumerate(self.opt.variables):
                        if f"v{i}" in saved and saved[f"v{i}"].shape == tuple(v.shape):
                            v.assign(saved[f"v{i}"])
                self.step = json.loads(meta.read_text())["step"]
                curve.trim(self.log_path, self.step)
                print(f"{self.name}: resumed from {d} at step {self.step}")
                return True
        return False

    def save(self, d: Path, extra: dict | None = None, with_optimizer: bool = True) -> None:
        d.mkdir(parents=True, exist_ok=True)
        self.model.save(d / f"{self.name}.keras")
        if with_optimizer:
            np.savez(d / f"{self.name}.opt.npz", **{f"v{i}": np.asarray(v) for i, v in enumerate(self.opt.variables)})
            if self.head is not None:
                self.head.save_weights(d / f"{self.name}_head.weights.h5")
        (d / f"{self.name}.json").write_text(json.dumps({"step": self.step, **(extra or {})}, indent=1))
        if self.log_path.exists():
            shutil.copy(self.log_path, d / self.log_path.name)

    def log(self, row: dict) -> None:
        curve.append(self.log_path, row)


def centred_cosine(a, b, mean):
    """Cosine of ``a − mean`` and ``b − mean`` along the last axis (N×D tensors, any Keras
    backend), in [−1, 1]; shape N."""
    from keras import ops  # noqa: PLC0415

    a, b = a - mean, b - mean
    return ops.sum(a * b, -1) / (ops.norm(a, axis=-1) * ops.norm(b, axis=-1) + 1e-8)


def _column(i: int):
    """A Keras loss or metric: column ``i`` of a training graph's N×K output, per image."""
    def column(y_true, y_pred):
        return y_pred[:, i]

    column.__name__ = f"column{i}"
    return column


def predictor_graph(model, mean_vector: np.ndarray, scale: float, head=None, w_bottleneck: float = 0.0,
                    feature_scale: float = 1.0):
    """The predictor's training graph (backend-agnostic Keras, trained with ``train_on_batch``):
    [images N×H×W×3 float32 in [0, 1], the teacher's vectors N×D] (+ the teacher's pooled
    features N×F with ``head``) → N×2 float32 per image: [loss, centred cosine].

    loss = mean((p − y)² / scale²) + (1 − centred cosine(p, y)) + ``w_bottleneck`` ×
    mean((head(hidden) − f)² / feature_scale²): squared error in units of the training
    vectors' (features') standard deviation, the vectors centred on ``mean_vector``."""
    import keras  # noqa: PLC0415
    from keras import ops  # noqa: PLC0415

    x = keras.Input(model.input_shape[1:], name="images")
    y = keras.Input((model.output_shape[-1],), name="vectors")
    inputs = [x, y]
    mean = ops.convert_to_tensor(np.asarray(mean_vector, np.float32))
    if head is None:
        p, hint = model(x), 0.0
    else:
        f = keras.Input((head.output_shape[-1],), name="features")
        inputs.append(f)
        p, g = keras.Model(model.inputs, [model.output, head(model.get_layer("hidden").output)])(x)
        hint = w_bottleneck * ops.mean(ops.square((g - f) / feature_scale), -1)
    cos = centred_cosine(p, y, mean)
    loss = ops.mean(ops.square((p - y) / scale), -1) + (1.0 - cos) + hint
    return keras.Model(inputs, ops.stack([loss, cos], -1), name="predictor_training")


def draw_batch(rng: np.random.Generator, n: int, batch: int,
               pools: tuple[np.ndarray, np.ndarray] | None = None, share: float | None = None) -> np.ndarray:
    """``batch`` distinct row indices of ``n`` bank rows, ascending. Without ``pools`` every row is
    alike; with ``pools`` (painting rows, other rows) the number drawn from the first is
    Binomial(``batch``, ``share``), clipped so that pools smaller than a batch still fill it."""
    if pools is None:
        return np.sort(rng.choice(n, batch, replace=False))
    k = int(np.clip(rng.binomial(batch, share), batch - len(pools[1]), len(pools[0])))
    return np.sort(np.concatenate([rng.choice(pools[0], k, replace=False),
                                   rng.choice(pools[1], batch - k, replace=False)]))


def _per_row(workdir: Path, names: list[str], what: str, missing: str) -> np.ndarray:
    """``{name}_{what}.npy`` of each bank in ``names``, concatenated in bank order (a row per bank
    row). Raises SystemExit(``missing``) when a bank lacks it."""
    paths = [workdir / f"{n}_{what}.npy" for n in names]
    if not all(p.exists() for p in paths):
        raise SystemExit(missing)
    return np.concatenate([np.load(p) for p in paths])


def train_predictor(workdir: Path, steps: int, batch: int, seed: int, save_every: int,
                    spec, out: Path = CHECKPOINTS, lr: float = 1e-3, w_bottleneck: float = 0.0,
                    painting_share: float | None = None) -> None:
    """Train (or resume) the student predictor of shape ``spec`` (a
    :class:`~stylecast.model.networks.PredictorSpec`) on the banks in ``workdir``; the finished
    weights go to ``out/predictor.keras`` (+ ``predictor.json`` with the step and the training
    split's mean vector). Another ``out`` than ``model/checkpoints`` leaves the committed
    predictor, which is also the transformer's frozen feature net, untouched.

    ``w_bottleneck`` > 0 adds a hint from the teacher's insides: a linear head on the hidden
    layer regresses the teacher predictor's pooled features (phase ``features``), squared error
    in units of their standard deviation, with this weight (the vector loss has weight 1).
    ``painting_share`` in [0, 1] fixes the expected share of each batch drawn from rows made from
    the training paintings themselves (crops, recoloured crops, mosaics), however many other rows
    the banks hold; None draws every row alike.
    Backend-agnostic Keras (:func:`predictor_graph`), so any Keras backend trains it.
    Raises SystemExit when those features or the banks' painting marks are missing."""
    import keras  # noqa: PLC0415

    from stylecast.model.networks import build_predictor  # noqa: PLC0415

    vectors = np.load(workdir / "style_vectors.npy")
    mean_vector = vectors.mean(0)  # the training split's mean, as evaluation uses
    banks = [(np.load(workdir / "style_images.npy", mmap_mode="r"), vectors)]
    if (workdir / "x_vectors.npy").exists():
        banks.append((np.load(workdir / "x_images.npy", mmap_mode="r"), np.load(workdir / "x_vectors.npy")))
    names = ["style", "x"][:len(banks)]
    sizes = np.cumsum([0] + [len(v) for _, v in banks])
    all_vectors = np.concatenate([v for _, v in banks]).astype(np.float32)
    scale = float((vectors - mean_vector).std())
    model = build_predictor(spec)
    head, all_features, feature_scale = None, None, 1.0
    if w_bottleneck > 0:
        all_features = _per_row(workdir, names, "features",
                                f"--w-bottleneck needs the teacher's features in {workdir}: run --phase features"
                                ).astype(np.float32)
        feature_scale = float(all_features.std())
        head = keras.Sequential([keras.Input((spec.hidden,)), keras.layers.Dense(BOTTLENECK_DIM)],
                                name="bottleneck_head")
    pools = None
    if painting_share is not None:
        marks = _per_row(workdir, names, "is_painting", f"--painting-share needs the banks' painting marks in "
                         f"{workdir}: build the banks again (--phase bank / extra)")
        pools = np.flatnonzero(marks), np.flatnonzero(~marks)
    tr = Trainer(workdir, "predictor", model, lr, head)
    tr.restore(workdir / "ckpt", out)
    graph = predictor_graph(model, mean_vector, scale, head, w_bottleneck, feature_scale)
    graph.compile(optimizer=tr.opt, loss=_column(0), metrics=[_column(1)], jit_compile=False)
    rng = np.random.default_rng(seed + tr.step)
    lr_sched = lambda s: lr * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)) + 2e-5  # noqa: E731

    bar = tqdm(total=steps, initial=tr.step, desc="predictor")
    while tr.step < steps:
        idx = draw_batch(rng, sizes[-1], batch, pools, painting_share)
        x = to_float(np.concatenate([imgs[idx[(idx >= lo) & (idx < hi)] - lo]
                                     for (imgs, _), lo, hi in zip(banks, sizes, sizes[1:])]))
        if rng.random() < 0.5:
            x = np.ascontiguousarray(x[:, :, ::-1])
        tr.opt.learning_rate.assign(lr_sched(tr.step))
        inputs = [x, all_vectors[idx]] + ([all_features[idx]] if head is not None else [])
        logs = graph.train_on_batch(inputs, np.zeros((len(idx), 1), np.float32), return_dict=True)
        tr.step += 1
        bar.update(1)
        if tr.step % 20 == 0:
            loss, cos = float(logs["loss"]), float(logs["column1"])
            bar.set_postfix(loss=f"{loss:.3f}", cos=f"{cos:.3f}")
            tr.log({"step": tr.step, "loss": loss, "centred_cos": cos, "time": time.time()})
        if tr.step % save_every == 0 or tr.step == steps:
            tr.save(workdir / "ckpt", {"mean_vector": mean_vector.tolist()})
    bar.close()
    tr.save(out, {"mean_vector": mean_vector.tolist(), "spec": dataclasses.asdict(spec), "w_bottleneck": w_bottleneck},
            with_optimizer=False)


def _feature_extractor(predictor):
    """Intermediate activations of the frozen student predictor (variable input size)."""
    import keras  # noqa: PLC0415

    names = ["b0_pw_relu", "b1_pw_relu", "b3_pw_relu"]
    return keras.Model(predictor.inputs, [predictor.get_layer(n).output for n in names])


def transformer_graph(model, weights: dict[str, float], feats=None):
    """The v4 transformer's training graph (backend-agnostic Keras, trained with
    ``train_on_batch``): [content N×H×W×3, the teacher's output N×H×W×3, both float32 in [0, 1];
    style vectors N×D] → N×4 float32 per image: [loss, pixel L1, feature term, squared error].

    loss = ``l1`` × mean |out − y| + ``grad`` × (mean |∂y out − ∂y y| + mean |∂x out − ∂x y|)
    + ``stat`` × Σ over 8² and 32² cells of mean |cell mean difference| + mean |cell std
    difference| + ``feat`` × Σ over the frozen ``feats`` maps at 256² (means, stds, and half
    the map's L1); ``feats`` None when ``weights["feat"]`` is 0."""
    import keras  # noqa: PLC0415
    from keras import ops  # noqa: PLC0415

    x = keras.Input((None, None, 3), name="content")
    y = keras.Input((None, None, 3), name="target")
    v = keras.Input((model.inputs[1].shape[-1],), name="style")
    out = model([x, v])

    def mean(t):  # per image
        return ops.mean(t, axis=tuple(range(1, len(t.shape))))

    def stats(t, k):
        m = ops.average_pool(t, k, k, "valid")
        var = ops.average_pool(ops.square(t), k, k, "valid") - ops.square(m)
        return m, ops.sqrt(ops.maximum(var, 0.0) + 1e-6)

    def grads(t):
        return t[:, 1:, :, :] - t[:, :-1, :, :], t[:, :, 1:, :] - t[:, :, :-1, :]

    l1 = mean(ops.abs(out - y))
    (gy, gx), (ty, tx) = grads(out), grads(y)
    lgrad = mean(ops.abs(gy - ty)) + mean(ops.abs(gx - tx))
    lstat = 0.0
    for k in (8, 32):
        (mo, so), (mt, st) = stats(out, k), stats(y, k)
        lstat = lstat + mean(ops.abs(mo - mt)) + mean(ops.abs(so - st))
    lfeat = ops.zeros_like(l1)
    if feats is not None:
        for a, b in zip(*(feats(ops.image.resize(z, (256, 256))) for z in (out, y))):
            (ma, sa), (mb, sb) = ((ops.mean(f, (1, 2)), ops.sqrt(ops.var(f, (1, 2)) + 1e-5)) for f in (a, b))
            lfeat = lfeat + mean(ops.abs(ma - mb)) + mean(ops.abs(sa - sb)) + 0.5 * mean(ops.abs(a - b))
    loss = (weights["l1"] * l1 + weights["grad"] * lgrad + weights["stat"] * lstat + weights["feat"] * lfeat)
    terms = [loss, l1, lfeat, mean(ops.square(out - y))]
    return keras.Model([x, y, v], ops.stack(terms, -1), name="transformer_training")


def train_transformer(workdir: Path, steps: int, batch: int, crop: int, seed: int, save_every: int,
                      weights: dict[str, float], out: Path = CHECKPOINTS) -> None:
    """Train (or resume) the v4 transformer on the teacher targets cached in ``workdir``
    (phase ``cache``), ``batch`` aligned random ``crop``² crops per step, the loss of
    :func:`transformer_graph` (global gradient norm clipped to 5), a cosine from 2e-3 over
    ``steps``; checkpoints every ``save_every`` steps to ``workdir/ckpt`` (resumable) and the
    weights to ``out`` (default the committed ``model/checkpoints``)."""
    import keras  # noqa: PLC0415

    from stylecast.model.networks import build_transformer  # noqa: PLC0415

    done = json.loads((workdir / "t_done.json").read_text())["done"]
    content = np.load(workdir / "t_content.npy", mmap_mode="r")
    target = np.load(workdir / "t_target.npy", mmap_mode="r")
    styles = np.load(workdir / "t_styles.npy")
    feats = None
    if weights["feat"] > 0:
        predictor = keras.saving.load_model(CHECKPOINTS / "predictor.keras", compile=False)
        predictor.trainable = False
        feats = _feature_extractor(predictor)
    model = build_transformer()
    tr = Trainer(workdir, "transformer", model, 2e-3, global_clipnorm=5.0)
    tr.restore(workdir / "ckpt", out)
    graph = transformer_graph(model, weights, feats)
    graph.compile(optimizer=tr.opt, loss=_column(0), metrics=[_column(1), _column(2), _column(3)],
                  jit_compile=False)
    rng = np.random.default_rng(seed + tr.step)
    lr_sched = lambda s: 2e-3 * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)) + 3e-5  # noqa: E731

    bar = tqdm(total=steps, initial=tr.step, desc=f"transformer@{crop}")
    size = content.shape[1]
    while tr.step < steps:
        idx = np.sort(rng.choice(done, batch, replace=False))
        yy, xx = rng.integers(0, size - crop + 1, 2)
        x = to_float(content[idx, yy:yy + crop, xx:xx + crop])
        y = to_float(target[idx, yy:yy + crop, xx:xx + crop])
        if rng.random() < 0.5:
            x, y = np.ascontiguousarray(x[:, :, ::-1]), np.ascontiguousarray(y[:, :, ::-1])
        tr.opt.learning_rate.assign(lr_sched(tr.step))
        logs = graph.train_on_batch([x, y, styles[idx]], np.zeros((len(idx), 1), np.float32), return_dict=True)
        tr.step += 1
        bar.update(1)
        if tr.step % 20 == 0:
            psnr = -10.0 * np.log10(float(logs["column3"]))
            bar.set_postfix(loss=f"{float(logs['loss']):.3f}", psnr=f"{psnr:.1f}")
            tr.log({"step": tr.step, "crop": crop, "loss": float(logs["loss"]), "l1": float(logs["column1"]),
                    "feat": float(logs["column2"]), "psnr": psnr, "time": time.time()})
        if tr.step % save_every == 0 or tr.step == steps:
            tr.save(workdir / "ckpt")
            tr.save(out, with_optimizer=False)
    bar.close()


def _ints(text: str) -> tuple[int, ...]:
    """``"32,64,128"`` → ``(32, 64, 128)`` (an argparse type)."""
    return tuple(int(t) for t in text.split(","))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phase", choices=["all", "bank", "cache", "extra", "features", "predictor", "transformer"],
                    default="all")
    ap.add_argument("--workdir", type=Path, default=REPO / "runs" / "distill")
    ap.add_argument("--assets", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--per-image", type=int, default=6, help="augmented style crops per training image")
    ap.add_argument("--recoloured", type=int, default=120, help="recoloured crops per training painting (extra bank)")
    ap.add_argument("--mosaics", type=int, default=2400, help="2×2 painting mosaics (extra bank)")
    ap.add_argument("--novel", type=int, default=0,
                    help="teacher outputs in styles drawn around the style bank's vectors (extra bank)")
    ap.add_argument("--predictor-steps", type=int, default=9000)
    ap.add_argument("--predictor-widths", type=_ints, default=None,
                    metavar="W0,W1,...", help="predictor channel widths (default: PredictorSpec's)")
    ap.add_argument("--predictor-strides", type=_ints, default=None,
                    metavar="S0,S1,...", help="predictor strides, one per width (default: PredictorSpec's)")
    ap.add_argument("--predictor-hidden", type=int, default=None, help="predictor hidden units (default: PredictorSpec's)")
    ap.add_argument("--predictor-lr", type=float, default=1e-3, help="peak of the predictor's cosine schedule")
    ap.add_argument("--w-bottleneck", type=float, default=0.0,
                    help="weight of the predictor's hint on the teacher's pooled features (0: off; needs --phase "
                         "features)")
    ap.add_argument("--painting-share", type=float, default=None,
                    help="expected share of each predictor batch drawn from the training paintings' own rows "
                         "(crops, recoloured crops, mosaics); default: every bank row alike")
    ap.add_argument("--predictor-out", type=Path, default=CHECKPOINTS,
                    help="where the finished predictor goes (default model/checkpoints: also the transformer's "
                         "feature net)")
    ap.add_argument("--cache-size", type=int, default=2500, help="teacher (content, style) targets")
    ap.add_argument("--transformer-steps", type=int, default=23000)
    ap.add_argument("--transformer-out", type=Path, default=CHECKPOINTS,
                    help="where the v4 transformer's weights go (default model/checkpoints, the committed ones)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=384)
    ap.add_argument("--save-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads and the teacher's LiteRT threads")
    ap.add_argument("--w-l1", type=float, default=1.0)
    ap.add_argument("--w-grad", type=float, default=1.0)
    ap.add_argument("--w-stat", type=float, default=1.0)
    ap.add_argument("--w-feat", type=float, default=1.0)
    args = ap.parse_args(argv)
    from stylecast.model.networks import PredictorSpec  # noqa: PLC0415

    given = {"widths": args.predictor_widths, "strides": args.predictor_strides, "hidden": args.predictor_hidden}
    if args.painting_share is not None and not 0 <= args.painting_share <= 1:
        ap.error(f"--painting-share {args.painting_share}: give a share between 0 and 1")
    try:  # refused here, before the teacher loads or a bank is built
        spec = dataclasses.replace(PredictorSpec(), **{k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        ap.error(f"--predictor-widths/--predictor-strides: {exc}")

    import keras  # noqa: PLC0415

    limit_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    root = args.assets or data.assets_dir()
    if not (root / "models" / "magenta").is_dir():
        raise SystemExit(f"teacher assets not found under {root} (set STYLECAST_ASSETS)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    with Teacher(root / "models" / "magenta", threads=args.threads) as teacher:
        if args.phase in ("all", "bank") and not (args.workdir / "style_vectors.npy").exists():
            build_style_bank(root, teacher, args.workdir, args.per_image, args.seed)
        if args.phase in ("all", "cache"):
            build_transfer_cache(root, teacher, args.workdir, args.cache_size, args.seed + 1)
        if args.phase in ("all", "extra") and not (args.workdir / "x_vectors.npy").exists():
            build_extra_bank(root, teacher, args.workdir, args.recoloured, args.mosaics, args.seed + 3, args.novel)
        if args.phase == "features" or (args.phase == "all" and args.w_bottleneck > 0):
            build_bottleneck_bank(teacher, args.workdir)
        if args.phase in ("all", "predictor"):
            train_predictor(args.workdir, args.predictor_steps, 32, args.seed, args.save_every, spec,
                            args.predictor_out, args.predictor_lr, args.w_bottleneck, args.painting_share)
        if args.phase in ("all", "transformer"):
            w = {"l1": args.w_l1, "grad": args.w_grad, "stat": args.w_stat, "feat": args.w_feat}
            train_transformer(args.workdir, args.transformer_steps, args.batch, args.crop, args.seed + 2,
                              args.save_every, w, args.transformer_out)


if __name__ == "__main__":
    main()
