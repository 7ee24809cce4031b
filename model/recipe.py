"""The v5 recipe: a student that learns from the teacher's insides (``make train``).

Backend-agnostic Keras (``keras.ops`` only; ``KERAS_BACKEND=tensorflow`` here,
``torch`` on a lent GPU).  Two stages, each resumable from its checkpoint, seeded
(the batch of step s depends only on the seed and s):

1. ``blocks``: block-by-block hints.  The frozen Keras teacher (:mod:`teacher_port`)
   runs on every batch; each student piece learns one stretch of the teacher from the
   teacher's own activations: the encoder image → the teacher's trunk input, student
   block k the teacher's blocks it stands for (:func:`networks.teacher_hints`), the
   decoder the teacher's last block output → the teacher's image (L1 + gradient); a
   ``"full"`` decoder (the quality tier's ``q5d``, ``q5de``) learns it in three stages
   through the teacher's ``up1`` and ``up2``.
2. ``e2e``: the whole student end to end under one cosine schedule: pixel L1, image
   gradient L1, the hints at the same boundaries with a weight decaying (cosine) from
   1 to 0, a shift-consistency term, and two texture terms (v4's, :mod:`distill`):
   ``stat``, local colour statistics (mean and standard deviation over 8 px and 32 px
   windows, output vs teacher), and ``feat``, features of the project's frozen student
   predictor (``model/checkpoints/predictor.keras``, layers :data:`FEAT_LAYERS`):
   channel mean and standard deviation plus half the feature L1, output vs teacher;
   optionally (``--w-mse``) the pixel squared error, the error PSNR measures.

Every target is fresh: the teacher stylizes each new random crop as training goes, so
no pair repeats.  Crops are whole frames for the teacher too (their borders are real
frame edges, as in serving).  Half of each batch is the other half's window moved by
the same (dy, dx) ∈ [−7, 7]², and the shift term asks the student's outputs to agree
on the overlap (the outer 8 px excluded).

The inputs come from a *pack* (:func:`build_pack`, ``runs/v5/pack``, never
committed): the teacher graph (``teacher.npz``), the training photos as JPEG bytes
(``crops.npz``) and teacher style vectors of training paintings and photos
(``styles.npz``).  Held-out styles and ``content/val`` are never read.

Checkpoints: ``<out>/student.weights.h5`` + ``student.json`` (spec, steps per stage,
and each stage's cosine schedule: first step, last step, peak learning rate; ``history``, every
segment trained with its loss weights, from the first run that recorded one) +
``optimizer_<stage>.npz``; the curve is ``<out>/log.csv`` (on resume, rows past the
checkpoint's step are dropped: they are trained and logged again).  A resumed run keeps its
recorded schedule while ``--*-steps`` names the same last step; a different last step
starts a new cosine segment at the step reached (a fine-tune: learning rate and hint
weight rise again and decay to that step), logged as such.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import time
from pathlib import Path

import numpy as np
from PIL import Image

from stylecast.model import curve
from stylecast.model.threads import limit_threads

REPO = Path(__file__).resolve().parents[1]
SHIFT = 7      # largest shift of the shift-consistency pairs (px)
MARGIN = 8     # border excluded from the shift term (px)
# Default weight of each end-to-end loss term (``--w-*``); ``grad`` has no flag.  ``mse`` is off
# unless weighted.
TERM_WEIGHTS = {"pixel": 1.0, "grad": 1.0, "hint": 0.5, "shift": 2.0, "stat": 1.0, "feat": 1.0, "mse": 0.0}
STAT_WINDOWS = (8, 32)  # local-statistics windows (px)
FEAT_LAYERS = ("b0_pw_relu", "b1_pw_relu", "b3_pw_relu")  # predictor layers of the feat term
PREDICTOR = REPO / "model" / "checkpoints" / "predictor.keras"


# ---------------------------------------------------------------- the pack

def build_pack(root: Path, out: Path, seed: int, crops_per_painting: int = 12, photo_styles: int = 150,
               max_side: int = 400, quality: int = 92) -> None:
    """Write ``teacher.npz``, ``crops.npz`` and ``styles.npz`` to ``out`` (training split only).

    Needs LiteRT (the teacher's predictor labels the style vectors) and Keras on any backend
    (the teacher's graph is read by :mod:`teacher_port`)."""
    from stylecast.model import data  # noqa: PLC0415
    from stylecast.model.preprocess import style_image  # noqa: PLC0415
    from stylecast.model.teacher import PREDICT_FILE  # noqa: PLC0415
    from stylecast.model.teacher_port import TEACHER_F16, extract_graph  # noqa: PLC0415
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    models = root / "models" / "magenta"
    extract_graph(models / TEACHER_F16).save(out / "teacher.npz")
    blobs = []
    for p in data.train_content(root):
        img = Image.fromarray(data.load_rgb(p))
        s = max_side / max(img.size)
        if s < 1:
            img = img.resize((round(img.width * s), round(img.height * s)), Image.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    np.savez(out / "crops.npz", bytes=np.concatenate(blobs), offsets=offsets)

    it = Interpreter(model_path=str(models / PREDICT_FILE), num_threads=2)
    it.allocate_tensors()
    inp, outp = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]

    def vector(x: np.ndarray) -> np.ndarray:
        it.set_tensor(inp, x[None].astype(np.float32))
        it.invoke()
        return it.get_tensor(outp).reshape(-1).copy()

    rng = np.random.default_rng(seed)
    vecs, kinds = [], []
    for p in data.train_styles(root):
        img = Image.open(p).convert("RGB")
        for k in range(crops_per_painting):
            if k:
                w, h = img.size
                s = int(min(w, h) * rng.uniform(0.4, 1.0))
                x0, y0 = rng.integers(0, w - s + 1), rng.integers(0, h - s + 1)
                crop = img.crop((x0, y0, x0 + s, y0 + s))
            else:
                crop = img
            vecs.append(vector(style_image(crop)))
            kinds.append(0)
    photos = data.train_content(root)
    for i in rng.choice(len(photos), min(photo_styles, len(photos)), replace=False):
        vecs.append(vector(style_image(Image.open(photos[i]))))
        kinds.append(1)
    np.savez(out / "styles.npz", vectors=np.stack(vecs).astype(np.float32), kinds=np.array(kinds, np.int8))


class Pack:
    """A pack in memory: decoded photos (uint8 H×W×3) and the style vector bank."""

    def __init__(self, path: Path):
        with np.load(path / "crops.npz") as z:
            raw, off = z["bytes"], z["offsets"]
        self.photos = [np.asarray(Image.open(io.BytesIO(raw[a:b].tobytes())).convert("RGB"))
                       for a, b in zip(off[:-1], off[1:])]
        with np.load(path / "styles.npz") as z:
            self.vectors, self.kinds = z["vectors"], z["kinds"]
        self.teacher = path / "teacher.npz"


def make_batch(pack: Pack, step: int, seed: int, pairs: int, crop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The batch of ``step``: content 2P×C×C×3 float32 [0,1] (rows P… are rows 0…P−1 moved
    by one shift), style vectors 2P×100, and the shift (dy, dx) as int32 2P×2."""
    rng = np.random.default_rng([seed, step])
    dy, dx = 0, 0
    while dy == 0 and dx == 0:
        dy, dx = (int(v) for v in rng.integers(-SHIFT, SHIFT + 1, 2))
    painting = np.flatnonzero(pack.kinds == 0)
    photo = np.flatnonzero(pack.kinds == 1)
    a_imgs, b_imgs, styles = [], [], []
    need = crop + 2 * SHIFT
    for _ in range(pairs):
        img = pack.photos[rng.integers(len(pack.photos))]
        h, w = img.shape[:2]
        s = rng.uniform(need / min(h, w), max(need / min(h, w), 1.0) * 1.0001)
        if s != 1.0:
            img = np.asarray(Image.fromarray(img).resize((max(need, round(w * s)), max(need, round(h * s))),
                                                         Image.BILINEAR))
            h, w = img.shape[:2]
        if rng.random() < 0.5:
            img = img[:, ::-1]
        # Window a at (y, x); window b at (y+dy, x+dx); both inside the photo.  Crop edges at
        # the photo's own edges and inside it alike (y, x anywhere the pair fits).
        y = int(rng.integers(max(0, -dy), h - crop - max(0, dy) + 1))
        x = int(rng.integers(max(0, -dx), w - crop - max(0, dx) + 1))
        a_imgs.append(img[y:y + crop, x:x + crop])
        b_imgs.append(img[y + dy:y + dy + crop, x + dx:x + dx + crop])
        kind = rng.choice(4, p=[0.6, 0.12, 0.16, 0.12])
        v = pack.vectors[rng.choice(painting)]
        if kind == 1:
            v = pack.vectors[rng.choice(photo)]
        elif kind == 2:  # a weaker style: blended towards a photo's vector
            v = (m := rng.uniform(0.2, 1.0)) * v + (1 - m) * pack.vectors[rng.choice(photo)]
        elif kind == 3:  # two-painting blend
            v = (m := rng.uniform(0.2, 0.8)) * v + (1 - m) * pack.vectors[rng.choice(painting)]
        styles.append(v)
    content = np.stack(a_imgs + b_imgs).astype(np.float32) / 255.0
    style = np.concatenate([np.stack(styles)] * 2).astype(np.float32)
    shift = np.tile(np.array([[dy, dx]], np.int32), (2 * pairs, 1))
    return content, style, shift


# ---------------------------------------------------------------- losses and the training graph

def distill_graph_class():
    """The Keras model class of one training step (built on first call: Keras is imported here)."""
    import keras  # noqa: PLC0415
    from keras import ops  # noqa: PLC0415

    from stylecast.model.networks import student_parts, student_taps, teacher_hints  # noqa: PLC0415

    def l1(a, b):
        return ops.mean(ops.abs(a - b))

    def grad_l1(a, b):
        dya, dxa = a[:, 1:] - a[:, :-1], a[:, :, 1:] - a[:, :, :-1]
        dyb, dxb = b[:, 1:] - b[:, :-1], b[:, :, 1:] - b[:, :, :-1]
        return l1(dya, dyb) + l1(dxa, dxb)

    def hint(a, t):  # L1 relative to the teacher activation's mean magnitude
        return l1(a, t) / (ops.mean(ops.abs(t)) + 1e-3)

    class DistillGraph(keras.Model):
        """One training step's forward pass: [content, style, shift, hint_w] → the weighted
        loss terms as an N×K matrix (each column a batch mean, broadcast over N)."""

        E2E_TERMS = tuple(TERM_WEIGHTS)

        def __init__(self, student, spec, teacher, stage: str, weights: dict[str, float], pairs: int,
                     crop: int, features=None, **kw):
            super().__init__(**kw)
            self.features = features
            self.pairs, self.crop = pairs, crop
            self.student, self.teacher, self.stage = student, teacher, stage
            self.hints = teacher_hints(spec)
            self.parts = student_parts(student, spec)
            self.w = {**TERM_WEIGHTS, **weights}
            if stage == "e2e":
                taps = student_taps(spec)
                self.taps = taps
                self.tapped = keras.Model(student.inputs, [student.output] +
                                          [student.get_layer(n).output for n in taps])
            self.terms = list(self.hints) if stage == "blocks" else list(self.E2E_TERMS)

        def call(self, inputs):
            content, style, shift, hint_w = inputs
            t = self.teacher([content, style])
            t = {k: ops.stop_gradient(v) for k, v in t.items()}
            t["content"] = content
            terms = []
            if self.stage == "blocks":
                for part, (src, dst) in self.hints.items():
                    out = self.parts[part]([t[src], style])
                    terms.append(l1(out, t[dst]) + grad_l1(out, t[dst]) if dst == "stylized" else hint(out, t[dst]))
            else:
                out, *feats = self.tapped([content, style])
                y = t["stylized"]
                hw = ops.mean(hint_w)
                lh = sum(hint(f, t[self.taps[name]]) for f, name in zip(feats, self.taps)) / len(feats)
                p, size = self.pairs, self.crop - 2 * MARGIN
                b = out[p:, MARGIN:MARGIN + size, MARGIN:MARGIN + size]
                dy, dx = shift[0, 0], shift[0, 1]
                a = ops.slice(out[:p], [0, MARGIN + dy, MARGIN + dx, 0], [p, size, size, 3])
                terms = [l1(out, y), grad_l1(out, y), hw * lh, l1(a, b), local_stats_l1(out, y)]
                terms.append(feature_l1(self.features(out), self.features(y)) if self.features is not None
                             else ops.zeros(()))
                terms.append(ops.mean(ops.square(out - y)))
            scale = [self.w[name] for name in self.terms] if self.stage == "e2e" else [1.0] * len(terms)
            vec = ops.stack([w * v for w, v in zip(scale, terms)])
            return ops.ones_like(content[:, 0, 0, :1]) * vec[None, :]

    return DistillGraph


def local_stats_l1(a, b):
    """Mean over :data:`STAT_WINDOWS` of the L1 between ``a``'s and ``b``'s local means and
    local standard deviations (non-overlapping k×k windows; N×H×W×C tensors, H, W ≥ 32).
    0 for equal images; > 0 when one is a blurred copy of the other (lost local contrast)."""
    from keras import ops  # noqa: PLC0415

    def stats(x, k):
        m = ops.average_pool(x, k, k, "valid")
        v = ops.average_pool(ops.square(x), k, k, "valid") - ops.square(m)
        return m, ops.sqrt(ops.maximum(v, 0.0) + 1e-6)

    total = 0.0
    for k in STAT_WINDOWS:
        (ma, sa), (mb, sb) = stats(a, k), stats(b, k)
        total = total + ops.mean(ops.abs(ma - mb)) + ops.mean(ops.abs(sa - sb))
    return total


def feature_l1(fa, fb):
    """The feat term over matching feature maps (lists of N×H×W×C): per layer, L1 of the
    channel means + L1 of the channel standard deviations + 0.5 × L1 of the maps."""
    from keras import ops  # noqa: PLC0415

    total = 0.0
    for a, b in zip(fa, fb):
        ma, mb = ops.mean(a, axis=(1, 2)), ops.mean(b, axis=(1, 2))
        sa = ops.sqrt(ops.var(a, axis=(1, 2)) + 1e-5)
        sb = ops.sqrt(ops.var(b, axis=(1, 2)) + 1e-5)
        total = total + ops.mean(ops.abs(ma - mb)) + ops.mean(ops.abs(sa - sb)) + 0.5 * ops.mean(ops.abs(a - b))
    return total


def feature_extractor(path: Path = PREDICTOR):
    """The frozen predictor's first layers, up to the last of :data:`FEAT_LAYERS`, on any
    image size: N×H×W×3 [0,1] → the list of those layers' maps."""
    import keras  # noqa: PLC0415

    from stylecast.model import networks  # noqa: F401, PLC0415 - registers the predictor's layers

    predictor = keras.saving.load_model(path, compile=False)
    image = keras.Input((None, None, 3))
    x, outs = image, []
    for layer in predictor.layers[1:]:  # a chain up to the pooling
        x = layer(x)
        if layer.name in FEAT_LAYERS:
            outs.append(x)
            if len(outs) == len(FEAT_LAYERS):
                break
    model = keras.Model(image, outs, name="feat")
    model.trainable = False
    return model


def segment_cosine(lr: float, start: int, end: int, alpha: float = 0.02):
    """A Keras learning-rate schedule: cosine decay from ``lr`` at optimizer step ``start``
    to ``alpha × lr`` at step ``end``, flat after (and ``lr`` before ``start``)."""
    import keras  # noqa: PLC0415
    from keras import ops  # noqa: PLC0415

    class SegmentCosine(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            t = ops.clip((ops.cast(step, "float32") - start) / max(1, end - start), 0.0, 1.0)
            return lr * (alpha + (1 - alpha) * 0.5 * (1 + ops.cos(math.pi * t)))

        def get_config(self):
            return {"lr": lr, "start": start, "end": end, "alpha": alpha}

    return SegmentCosine()


def _sum_loss(y_true, y_pred):
    from keras import ops  # noqa: PLC0415

    return ops.sum(y_pred, axis=-1) + 0.0 * ops.sum(y_true, axis=-1)


# ---------------------------------------------------------------- training loop

def _cosine(step: int, start: int, end: int) -> float:
    t = min(max(step - start, 0), end - start) / max(1, end - start)
    return 0.5 * (1 + math.cos(math.pi * t))


def resume_schedule(meta: dict, stage: str, step: int, steps: int, lr: float) -> dict:
    """The cosine segment ``{"start", "end", "lr"}`` a run of ``stage`` follows when it resumes
    at ``step`` asked to reach ``steps``: the recorded one if it ends at ``steps``, else a new
    one from ``step`` (a checkpoint without a record followed one ending where it stopped)."""
    rec = meta.get("schedule", {}).get(stage) or {"start": 0, "end": step, "lr": lr}
    if rec["end"] == steps:
        return rec
    return {"start": step, "end": steps, "lr": lr}


def record_segment(meta: dict, stage: str, step: int, seg: dict, weights: dict[str, float] | None) -> None:
    """Append to ``meta["history"]`` what training from ``step`` follows: the stage, its cosine
    segment (``start``, ``end``, peak ``lr``) and the loss weights (``None`` for the block stage,
    whose terms are unweighted), unless the last entry already says the same (a plain resume)."""
    entry = {"stage": stage, "from": step, **seg, "weights": weights}
    history = meta.setdefault("history", [])
    same = lambda e: {k: v for k, v in e.items() if k != "from"}  # noqa: E731
    if not history or same(history[-1]) != same(entry):
        history.append(entry)


def train(pack_dir: Path, out: Path, spec_name: str, stage: str, steps: int, pairs: int, crop: int,
          lr: float, seed: int, save_every: int, minutes: float | None, weights: dict[str, float]) -> int:
    """Run ``stage`` up to ``steps`` steps (resuming from ``out``), or for ``minutes``, with the
    loss ``weights`` given over :data:`TERM_WEIGHTS`.  Returns the step reached."""
    import keras  # noqa: PLC0415

    from stylecast.model.networks import CANDIDATES, build_student  # noqa: PLC0415
    from stylecast.model.teacher_port import build_teacher  # noqa: PLC0415

    keras.utils.set_random_seed(seed)
    spec = CANDIDATES[spec_name]
    pack = Pack(pack_dir)
    student = build_student(spec)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "student.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    step = 0
    if meta:
        if meta["spec"] != spec_name:
            raise SystemExit(f"{out} holds a {meta['spec']} checkpoint, not {spec_name}")
        student.load_weights(out / "student.weights.h5")
        step = meta["steps"].get(stage, 0)
        print(f"resumed {spec_name} from {out}: stage {stage} at step {step}")
    if step >= steps:
        return step
    seg = resume_schedule(meta, stage, step, steps, lr)
    if step and seg["start"] == step:
        print(f"new cosine segment for {stage}: steps {step} -> {steps}, lr {lr:g} (the recorded one ended "
              f"at {meta.get('schedule', {}).get(stage, {}).get('end', step)})")
    meta.setdefault("schedule", {})[stage] = seg
    weights = {**TERM_WEIGHTS, **weights}
    record_segment(meta, stage, step, seg, weights if stage == "e2e" else None)
    teacher = build_teacher(pack.teacher, features=True)
    features = feature_extractor() if stage == "e2e" and weights["feat"] > 0 else None
    graph = distill_graph_class()(student, spec, teacher, stage, weights, pairs, crop, features=features)
    schedule = segment_cosine(seg["lr"], seg["start"], seg["end"])
    opt = keras.optimizers.Adam(schedule, clipnorm=1.0)
    graph.compile(optimizer=opt, loss=_sum_loss, jit_compile=False)
    # Build the graph and the optimizer, then restore the optimizer's state (it holds the step).
    content, style, shift = make_batch(pack, 0, seed, pairs, crop)
    hint_w = np.ones((len(content), 1), np.float32)
    graph([content, style, shift, hint_w])
    opt.build(graph.trainable_variables)
    opt_path = out / f"optimizer_{stage}.npz"
    if step and opt_path.exists():
        saved = np.load(opt_path)
        for i, v in enumerate(opt.variables):
            if f"v{i}" in saved and tuple(saved[f"v{i}"].shape) == tuple(v.shape):
                v.assign(saved[f"v{i}"])
    log_path = out / "log.csv"
    curve.trim(log_path, step, stage)
    deadline = None if minutes is None else time.time() + 60 * minutes
    t0 = time.time()
    while step < steps and (deadline is None or time.time() < deadline):
        content, style, shift = make_batch(pack, step, seed + (0 if stage == "blocks" else 1), pairs, crop)
        hint_w = np.full((len(content), 1), _cosine(step, seg["start"], seg["end"]), np.float32)
        logs = graph.train_on_batch([content, style, shift, hint_w], np.zeros((len(content), 1), np.float32),
                                    return_dict=True)
        step += 1
        if step % 10 == 0:
            terms = np.asarray(graph([content, style, shift, hint_w]))[0] if step % 50 == 0 else None
            row = {"stage": stage, "step": step, "loss": float(logs["loss"]),
                   "lr": float(schedule(step - 1)), "hint_w": float(hint_w[0, 0]),
                   "terms": "" if terms is None else " ".join(f"{n}={v:.4f}" for n, v in zip(graph.terms, terms)),
                   "s_per_step": (time.time() - t0) / 10, "time": time.time()}
            t0 = time.time()
            curve.append(log_path, row)
            print(row, flush=True)
        if step % save_every == 0 or step == steps:
            _save(student, opt, out, spec_name, stage, step, meta)
    _save(student, opt, out, spec_name, stage, step, meta)
    return step


def _save(student, opt, out: Path, spec_name: str, stage: str, step: int, meta: dict) -> None:
    student.save_weights(out / "student.tmp.weights.h5")
    (out / "student.tmp.weights.h5").replace(out / "student.weights.h5")
    np.savez(out / f"optimizer_{stage}.npz", **{f"v{i}": np.asarray(v) for i, v in enumerate(opt.variables)})
    meta.update(spec=spec_name, steps={**meta.get("steps", {}), stage: step})
    (out / "student.json").write_text(json.dumps(meta, indent=1))


def load_student(run: Path):
    """The student of a run folder (``student.json`` + ``student.weights.h5``): (model, meta)."""
    from stylecast.model.networks import CANDIDATES, build_student  # noqa: PLC0415

    meta = json.loads((run / "student.json").read_text())
    student = build_student(CANDIDATES[meta["spec"]])
    student.load_weights(run / "student.weights.h5")
    return student, meta


def export(run: Path, out_dir: Path, name: str, version: str, formats=None, predictor: Path | None = None):
    """Export a run's student with a predictor (the folder holding ``predictor.keras`` and
    ``predictor.json``; default the committed ``model/checkpoints``) as package
    ``out_dir/NAME/VERSION`` (every format unless ``formats``)."""
    import keras  # noqa: PLC0415

    from stylecast.model.export import export_package  # noqa: PLC0415
    from stylecast.backends.package import FORMATS  # noqa: PLC0415

    student, meta = load_student(run)
    ckpt = predictor or REPO / "model" / "checkpoints"
    net = keras.saving.load_model(ckpt / "predictor.keras", compile=False)
    training = {"recipe": "model/recipe.py", "spec": meta["spec"], "steps": meta["steps"],
                "predictor_steps": json.loads((ckpt / "predictor.json").read_text())["step"]}
    return export_package(net, student, out_dir, name, version, tuple(formats or FORMATS), training=training)


def commit_checkpoint(run: Path, dest: Path) -> None:
    """Copy what resuming needs (weights, step record, the current stage's optimizer, the
    curve) from a run folder to ``dest`` (``model/checkpoints/v5``, committed: ≈ 2 MB)."""
    import shutil  # noqa: PLC0415

    dest.mkdir(parents=True, exist_ok=True)
    meta = json.loads((run / "student.json").read_text())
    stage = "e2e" if "e2e" in meta["steps"] else "blocks"
    for f in ("student.weights.h5", "student.json", "log.csv", f"optimizer_{stage}.npz"):
        shutil.copy(run / f, dest / f)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pack", type=Path, default=REPO / "runs" / "v5" / "pack")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "v5" / "rt3")
    ap.add_argument("--assets", type=Path, default=None, help="build the pack from here if it is missing")
    ap.add_argument("--spec", default="rt3")
    ap.add_argument("--stage", choices=["blocks", "e2e", "all"], default="all")
    ap.add_argument("--block-steps", type=int, default=1000)
    ap.add_argument("--e2e-steps", type=int, default=12000)
    ap.add_argument("--pairs", type=int, default=2, help="shift pairs per batch (batch = 2 × pairs)")
    ap.add_argument("--crop", type=int, default=192, help="end-to-end crop (px, a multiple of 4)")
    ap.add_argument("--block-crop", type=int, default=128, help="block-by-block crop (px)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--minutes", type=float, default=None, help="stop after this long (checkpoint kept)")
    ap.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    ap.add_argument("--w-pixel", type=float, default=TERM_WEIGHTS["pixel"], help="pixel L1 (0-1 scale)")
    ap.add_argument("--w-mse", type=float, default=TERM_WEIGHTS["mse"],
                    help="pixel squared error (0-1 scale; the error PSNR measures; 0: off)")
    ap.add_argument("--w-hint", type=float, default=TERM_WEIGHTS["hint"])
    ap.add_argument("--w-shift", type=float, default=TERM_WEIGHTS["shift"])
    ap.add_argument("--w-stat", type=float, default=TERM_WEIGHTS["stat"], help="local-statistics texture term (0: off)")
    ap.add_argument("--w-feat", type=float, default=TERM_WEIGHTS["feat"], help="predictor-feature texture term (0: off)")
    ap.add_argument("--start-from", type=Path, default=None, metavar="DIR",
                    help="when --out holds no checkpoint, start from this one (make train: model/checkpoints/v5)")
    ap.add_argument("--export", type=Path, default=None, metavar="DIR",
                    help="do not train: export the run's student as package DIR/NAME/VERSION")
    ap.add_argument("--predictor", type=Path, default=None, metavar="DIR",
                    help="with --export: the predictor's folder (default model/checkpoints)")
    ap.add_argument("--formats", nargs="*", default=None, metavar="FORMAT",
                    help="with --export: these artifact formats only (default every one)")
    ap.add_argument("--name", default="stylecast-small")
    ap.add_argument("--version", default="5")
    args = ap.parse_args(argv)
    if args.export is not None and not (args.out / "student.json").exists():
        ap.error(f"--export: {args.out} holds no checkpoint (student.json); train it first (make train)")
    limit_threads(args.threads)
    if args.export is not None:
        export(args.out, args.export, args.name, args.version, args.formats, args.predictor)
        return
    if (args.start_from is not None and (args.start_from / "student.json").exists()
            and not (args.out / "student.json").exists()):
        commit_checkpoint(args.start_from, args.out)  # e.g. a fresh clone resumes the committed run
    if not (args.pack / "teacher.npz").exists():
        from stylecast.model import data  # noqa: PLC0415

        build_pack(args.assets or data.assets_dir(), args.pack, args.seed)
    weights = {k: getattr(args, f"w_{k}") for k in TERM_WEIGHTS if hasattr(args, f"w_{k}")}
    t_end = None if args.minutes is None else time.time() + 60 * args.minutes
    left = lambda: None if t_end is None else max(0.0, (t_end - time.time()) / 60)  # noqa: E731
    common = dict(pack_dir=args.pack, out=args.out, spec_name=args.spec, pairs=args.pairs, seed=args.seed,
                  save_every=args.save_every, weights=weights)
    meta_path = args.out / "student.json"
    e2e_started = meta_path.exists() and json.loads(meta_path.read_text())["steps"].get("e2e", 0) > 0
    if args.stage == "all" and e2e_started:  # never back to the block stage under an end-to-end model
        print(f"{args.out}: end-to-end training has started; the block stage stays where it ended")
    elif args.stage in ("blocks", "all"):
        train(stage="blocks", steps=args.block_steps, crop=args.block_crop, lr=args.lr, minutes=left(), **common)
    if args.stage in ("e2e", "all") and (t_end is None or time.time() < t_end):
        train(stage="e2e", steps=args.e2e_steps, crop=args.crop, lr=args.lr * 0.5, minutes=left(), **common)


if __name__ == "__main__":
    main()
