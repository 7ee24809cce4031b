"""Quality of a model package next to the Magenta teacher (``make eval-model``).

On every ``content/val`` image × the held-out styles, at 384², it reports:

- style carried: centred cosine between the teacher predictor's vector of the output
  and of the style image (centred by the teacher's mean vector over the training split);
- content kept: grayscale SSIM of output vs content;
- pixel fidelity: PSNR of the package's transformer (fed the teacher's vector) vs the
  teacher's output;
- predictor: centred cosine of the package's vectors to the teacher's on held-out styles;
- flicker (:func:`flicker`): each val photo panned by 1, 2, 3, 5 and 7 px, mean absolute
  difference between the stylized moved frame and the moved stylized frame on the
  interior, 0–255 (a perfectly steady network scores 0);
- border (:func:`border_score`): mean absolute difference between the outer 8 px ring's
  mean colour and the next 8 px ring's, 0–255, next to the teacher's (a band at the frame
  edge raises it).

The package runs through the real LiteRT backend (``--format``, default tflite-int8).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from stylecast.backends.base import BackendOptions, create_backend
from stylecast.backends.package import load_package
from stylecast.model import BUILTIN_DIR, data
from stylecast.model.preprocess import center_crop_square, content_image, style_image, to_uint8
from stylecast.model.quality import RING, SHIFTS, border_score, centred_cos, flicker, gray_ssim, psnr
from stylecast.model.teacher import TEACHER_SIZE, Teacher

SIZE = TEACHER_SIZE


def pan_strip(path: Path, size: int) -> np.ndarray:
    """A size×(size+max shift) strip of a photo (centre square, resized so the strip fits)."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = min(h, w * size // (size + max(SHIFTS)))
    box = ((w - s * (size + max(SHIFTS)) // size) // 2, (h - s) // 2)
    crop = img.crop((box[0], box[1], box[0] + s * (size + max(SHIFTS)) // size, box[1] + s))
    return content_image(crop, (size + max(SHIFTS), size))


def to_256(img: np.ndarray) -> np.ndarray:
    """An output as the predictor sees a style image (the serving preprocessing)."""
    return style_image(Image.fromarray(to_uint8(img)))


def square(path: Path, size: int) -> np.ndarray:
    return content_image(center_crop_square(Image.open(path)), (size, size))


def evaluate(package_dirs: list[Path], fmt: str, root: Path, threads: int, limit: int | None = None,
             sheet: Path | None = None) -> dict[str, dict[str, float]]:
    """The table rows (name → metric → mean) for the teacher and every package; with
    ``sheet``, also the contact sheet PNG."""
    teacher = Teacher(root / "models" / "magenta", threads=threads)
    backends = {}
    for d in package_dirs:
        pkg = load_package(d)
        b = create_backend("litert")
        b.load(pkg, BackendOptions(format=fmt, threads=threads))
        backends[f"{pkg.name} v{pkg.version}"] = b
    train_vecs = teacher.predict_style(np.stack([style_image(Image.open(p)) for p in data.training_images(root)]))
    mean = train_vecs.mean(0)
    styles = data.heldout_styles(root)
    contents = data.val_content(root)[:limit]
    s_imgs = np.stack([style_image(Image.open(p)) for p in styles])
    style_squares = [square(p, SIZE) for p in styles]
    t_vec = teacher.predict_style(s_imgs)
    b_vec = {k: b.predict_style(s_imgs) for k, b in backends.items()}
    rows: dict[str, dict[str, list[float]]] = {}

    def add(name: str, out: np.ndarray, content: np.ndarray, s: int, ref: np.ndarray | None = None):
        r = rows.setdefault(name, {"style": [], "ssim": [], "psnr": [], "border": [], "flicker": []})
        r["style"].append(float(centred_cos(teacher.predict_style(to_256(out)[None])[0], t_vec[s], mean)))
        r["ssim"].append(gray_ssim(out, content))
        r["border"].append(border_score(out))
        if ref is not None:
            r["psnr"].append(psnr(out, ref))

    cells, pans = [], None
    for ci, path in enumerate(contents):
        c = square(path, SIZE)
        own = teacher.predict_style(to_256(c)[None])[0]
        for s in range(len(styles)):
            t_out = teacher.stylize(c[None], t_vec[s][None])[0]
            add("teacher", t_out, c, s)
            outs = {}
            for k, b in backends.items():
                outs[k] = b.stylize(c[None], b_vec[k][s][None])[0]
                add(f"{k} transformer (teacher vector)", b.stylize(c[None], t_vec[s][None])[0], c, s, t_out)
                add(f"{k} pipeline (own predictor)", outs[k], c, s, t_out)
            add("teacher at half strength", teacher.stylize(c[None], (0.5 * t_vec[s] + 0.5 * own)[None])[0], c, s)
            add("content itself", c, c, s)
            add("style image itself", style_squares[s], c, s)
            if sheet is not None and ci < 4 and s < 5:
                cells.append((ci, s, c, t_out, outs))
        # Flicker: each photo panned, in one held-out style (the styles take turns).
        s = ci % len(styles)
        strip = pan_strip(path, SIZE)
        nets = {"teacher": lambda f, s=s: teacher.stylize(f[None], t_vec[s][None])[0]}
        for k, b in backends.items():
            nets[f"{k} transformer (teacher vector)"] = lambda f, b=b, s=s: b.stylize(f[None], t_vec[s][None])[0]
        for name, fn in nets.items():
            rows[name]["flicker"].append(flicker(fn, strip))
        if pans is None:
            pans = (strip, nets)
    out = {k: {m: float(np.mean(v)) for m, v in r.items() if v} for k, r in rows.items()}
    for k in backends:
        out[f"{k} predictor"] = {"centred_cos_heldout": float(centred_cos(b_vec[k], t_vec, mean).mean())}
    if sheet is not None:
        contact_sheet(cells, s_imgs, pans, sheet)
    for b in backends.values():
        b.close()
    return out


def contact_sheet(cells, style_imgs: np.ndarray, pans, path: Path, cell: int = 160) -> None:
    """Rows: content, then the teacher's and each package's outputs per style column; then
    the panning rows: the same scene moved 0, 1, 2, 3, 5, 7 px, each frame shifted back so
    the scene stands still (what changes between frames is flicker), per network."""
    n_c = max(c[0] for c in cells) + 1
    n_s = max(c[1] for c in cells) + 1
    labels = list(cells[0][4])
    per = 1 + len(labels)
    strip, nets = pans
    pan_rows = len(nets)
    sheet = Image.new("RGB", ((max(n_s, len(SHIFTS) + 1) + 1) * cell, (1 + per * n_c + pan_rows) * cell + 40), "white")
    draw = ImageDraw.Draw(sheet)
    u8 = lambda a: Image.fromarray(to_uint8(a)).resize((cell, cell))  # noqa: E731
    for s in range(n_s):
        sheet.paste(u8(style_imgs[s]), ((s + 1) * cell, 20))
    draw.text((4, 4), "styles (held out) ->   rows: content | teacher | " + " | ".join(labels), fill="black")
    for ci, s, c, t_out, outs in cells:
        y = 20 + (1 + per * ci) * cell
        sheet.paste(u8(c), (0, y))
        sheet.paste(u8(t_out), ((s + 1) * cell, y))
        for j, k in enumerate(labels):
            sheet.paste(u8(outs[k]), ((s + 1) * cell, y + (j + 1) * cell))
            draw.text((4, y + (j + 1) * cell + 4), k, fill="black")
    y0 = 40 + (1 + per * n_c) * cell
    draw.text((4, y0 - 16), "panning (1,2,3,5,7 px; frames moved back): what changes is flicker", fill="black")
    w = strip.shape[1] - max(SHIFTS)
    crop = slice(strip.shape[0] // 2 - cell // 2, strip.shape[0] // 2 + cell // 2)
    for r, (name, fn) in enumerate(nets.items()):
        y = y0 + r * cell
        draw.text((4, y + 4), name[:24], fill="black")
        for j, d in enumerate((0,) + SHIFTS):
            frame = fn(strip[:, d:d + w])  # the scene at column j + d of frame 0 is frame d's column j
            x0 = cell // 2 + 16 - d
            sheet.paste(Image.fromarray(to_uint8(frame[crop, x0:x0 + cell])), ((j + 1) * cell, y))
    sheet.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)  # keep the committed PNG small


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
    print(f"{'':48s} {'style':>7s} {'SSIM':>7s} {'PSNR dB':>8s} {'flicker':>8s} {'border':>7s}")
    for name, r in res.items():
        if "centred_cos_heldout" in r:
            continue
        print(f"{name:48s} {r['style']:7.3f} {r['ssim']:7.3f} {r.get('psnr', float('nan')):8.2f} "
              f"{r.get('flicker', float('nan')):8.2f} {r['border']:7.2f}")
    t = res["teacher"]
    for name, r in res.items():
        if "centred_cos_heldout" in r:
            print(f"{name}: centred cosine to teacher on held-out styles {r['centred_cos_heldout']:.3f} (goal >= 0.90)")
        elif name.endswith(("(teacher vector)", "(own predictor)")):
            print(f"{name}: style gap {t['style'] - r['style']:+.3f}, SSIM gap {abs(t['ssim'] - r['ssim']):.3f} "
                  "(quality tier goal <= 0.05 each)")


if __name__ == "__main__":
    main()
