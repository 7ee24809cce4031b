"""Quality of a model package next to the Magenta teacher (``make eval-model``).

On every ``content/val`` image × the held-out styles, at 384², it reports:

- style carried: centred cosine between the teacher predictor's vector of the output
  and of the style image (centred by the teacher's mean vector over the training split);
- content kept: grayscale SSIM of output vs content;
- pixel fidelity: PSNR of the package's transformer (fed the teacher's vector) vs the
  teacher's output, against two files of the teacher: Magenta's int8 one (``PSNR``, the
  reference of every table so far) and the same network at its fp16 weights (``PSNR f16``,
  the file the v5 recipe learns from; its own row also gives its PSNR to the int8 file,
  so the int8 teacher's quantization error is on the table, and its style and SSIM);
- predictor: centred cosine of the package's vectors to the teacher's on held-out styles, and
  the teacher's own transformer fed them (the row ``teacher fed NAME's predictor``: the style a
  perfect transformer behind that predictor would carry, so the pipeline's gap splits into the
  predictor's and the transformer's);
- flicker (:func:`~stylecast.model.quality.flicker`): each val photo panned by 1, 2, 3, 5 and 7 px, mean absolute
  difference between the stylized moved frame and the moved stylized frame on the
  interior, 0–255 (a perfectly steady network scores 0);
- border (:func:`~stylecast.model.quality.border_score`): mean absolute difference between the outer 8 px ring's
  mean colour and the next 8 px ring's, 0–255, next to the teacher's (a band at the frame
  edge raises it).

The package runs through the real LiteRT backend (``--format``, default tflite-int8); the
measures are collected by :mod:`stylecast.model.scoring`, as ``stylecast models compare`` does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from stylecast.backends.base import BackendOptions, create_backend
from stylecast.backends.package import load_package
from stylecast.model import BUILTIN_DIR, data
from stylecast.model.preprocess import style_image
from stylecast.model.quality import RING, SHIFTS, centred_cos
from stylecast.model.scoring import Judge, Scores, contact_sheet, pan_strip, square, to_256
from stylecast.model.teacher import TEACHER_SIZE, Teacher
from stylecast.model.teacher_port import TEACHER_F16

SIZE = TEACHER_SIZE
F16_ROW = "teacher, fp16 weights (PSNR: to the int8 file)"


def evaluate(package_dirs: list[Path], fmt: str, root: Path, threads: int, limit: int | None = None,
             sheet: Path | None = None) -> dict[str, dict[str, float]]:
    """The table rows (name → metric → mean) for the teacher and every package; with
    ``sheet``, also the contact sheet PNG."""
    teacher = Teacher(root / "models" / "magenta", threads=threads)
    teacher16 = Teacher(root / "models" / "magenta", threads=threads, transfer=TEACHER_F16)
    backends = {}
    for d in package_dirs:
        pkg = load_package(d)
        b = create_backend("litert")
        b.load(pkg, BackendOptions(format=fmt, threads=threads))
        backends[f"{pkg.name} v{pkg.version}"] = b
    train_vecs = teacher.predict_style(np.stack([style_image(Image.open(p)) for p in data.training_images(root)]))
    judge = Judge(teacher.predict_style, train_vecs.mean(0))
    styles = data.heldout_styles(root)
    contents = data.val_content(root)[:limit]
    s_imgs = np.stack([style_image(Image.open(p)) for p in styles])
    style_squares = [square(p, SIZE) for p in styles]
    t_vec = teacher.predict_style(s_imgs)
    b_vec = {k: b.predict_style(s_imgs) for k, b in backends.items()}
    rows: dict[str, Scores] = {}

    def add(name: str, out: np.ndarray, content: np.ndarray, s: int, ref: np.ndarray | None = None,
            ref_f16: np.ndarray | None = None):
        rows.setdefault(name, Scores()).add(judge, out, content, t_vec[s], ref, ref_f16)

    cells, pans = [], None
    for ci, path in enumerate(contents):
        c = square(path, SIZE)
        own = teacher.predict_style(to_256(c)[None])[0]
        for s in range(len(styles)):
            t_out = teacher.stylize(c[None], t_vec[s][None])[0]
            t16 = teacher16.stylize(c[None], t_vec[s][None])[0]
            add("teacher", t_out, c, s)
            add(F16_ROW, t16, c, s, t_out)
            outs = {"teacher": t_out}
            for k, b in backends.items():
                outs[k] = b.stylize(c[None], b_vec[k][s][None])[0]
                add(f"{k} transformer (teacher vector)", b.stylize(c[None], t_vec[s][None])[0], c, s, t_out, t16)
                add(f"{k} pipeline (own predictor)", outs[k], c, s, t_out, t16)
                add(f"teacher fed {k}'s predictor", teacher.stylize(c[None], b_vec[k][s][None])[0], c, s, t_out)
            add("teacher at half strength", teacher.stylize(c[None], (0.5 * t_vec[s] + 0.5 * own)[None])[0], c, s)
            add("content itself", c, c, s)
            add("style image itself", style_squares[s], c, s)
            if sheet is not None and ci < 4 and s < 5:
                cells.append((ci, s, c, outs))
        # Flicker: each photo panned, in one held-out style (the styles take turns).
        s = ci % len(styles)
        strip = pan_strip(path, SIZE)
        nets = {"teacher": lambda f, s=s: teacher.stylize(f[None], t_vec[s][None])[0]}
        for k, b in backends.items():
            nets[f"{k} transformer (teacher vector)"] = lambda f, b=b, s=s: b.stylize(f[None], t_vec[s][None])[0]
        for name, fn in nets.items():
            rows[name].add_flicker(fn, strip)
        rows[F16_ROW].add_flicker(lambda f, s=s: teacher16.stylize(f[None], t_vec[s][None])[0], strip)
        if pans is None:
            pans = (strip, nets)
    out = {k: r.means() for k, r in rows.items()}
    for k in backends:
        out[f"{k} predictor"] = {"centred_cos_heldout": float(centred_cos(b_vec[k], t_vec, judge.mean).mean())}
    if sheet is not None:
        labels = " | ".join(cells[0][3])
        contact_sheet(cells, s_imgs, pans, sheet, title="styles (held out) ->   rows: content | " + labels,
                      pan_title="panning (1,2,3,5,7 px; frames moved back): what changes is flicker")
    for b in [*backends.values(), teacher, teacher16]:
        b.close()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Evaluate model packages against the Magenta teacher.")
    ap.add_argument("--package", type=Path, nargs="*", default=None,
                    help="package folders (default: every built-in version)")
    ap.add_argument("--format", default="tflite-int8")
    ap.add_argument("--assets", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="first N val images only")
    ap.add_argument("--sheet", type=Path, default=None, help="write a contact sheet PNG")
    args = ap.parse_args(argv)
    root = args.assets or data.assets_dir()
    if not (root / "models" / "magenta").is_dir():
        raise SystemExit(f"teacher assets not found under {root} (set STYLECAST_ASSETS)")
    pkgs = args.package or sorted(p for p in BUILTIN_DIR.glob("*/*") if (p / "manifest.json").is_file())
    res = evaluate(pkgs, args.format, root, args.threads, args.limit, args.sheet)
    n = len(data.val_content(root)[:args.limit])
    print(f"packages {[str(p) for p in pkgs]} ({args.format}) on {n} val images x {len(data.HELDOUT_STYLES)} "
          f"held-out styles at {SIZE}^2; flicker over pans of {SHIFTS} px (0-255), border = outer {RING} px ring "
          f"vs the next (0-255)")
    nan = float("nan")
    print(f"{'':50s} {'style':>7s} {'SSIM':>7s} {'PSNR dB':>8s} {'PSNR f16':>8s} {'flicker':>8s} {'border':>7s}")
    for name, r in res.items():
        if "centred_cos_heldout" in r:
            continue
        print(f"{name:50s} {r['style']:7.3f} {r['ssim']:7.3f} {r.get('psnr', nan):8.2f} {r.get('psnr_f16', nan):8.2f} "
              f"{r.get('flicker', nan):8.2f} {r['border']:7.2f}")
    t, t16 = res["teacher"], res[F16_ROW]
    for name, r in res.items():
        if "centred_cos_heldout" in r:
            print(f"{name}: centred cosine to teacher on held-out styles {r['centred_cos_heldout']:.3f} (goal >= 0.90)")
        elif name.endswith(("(teacher vector)", "(own predictor)", "'s predictor")):
            print(f"{name}: style gap {t['style'] - r['style']:+.3f} (fp16 teacher {t16['style'] - r['style']:+.3f}), "
                  f"SSIM gap {abs(t['ssim'] - r['ssim']):.3f} (fp16 teacher {abs(t16['ssim'] - r['ssim']):.3f}) "
                  "(quality tier goal <= 0.05 each)")


if __name__ == "__main__":
    main()
