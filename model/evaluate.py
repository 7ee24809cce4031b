"""Quality of a model package next to the Magenta teacher (``make eval-model``).

On every ``content/val`` image × the held-out styles, at 384², it reports:

- style carried: centred cosine between the teacher predictor's vector of the output
  and of the style image (centred by the teacher's mean vector over the training split);
- content kept: grayscale SSIM of output vs content;
- pixel fidelity: PSNR of the package's transformer (fed the teacher's vector) vs the
  teacher's output;
- predictor: centred cosine of the package's vectors to the teacher's on held-out styles.

The package runs through the real LiteRT backend (``--format``, default tflite-int8).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from stylecast.backends.base import BackendOptions, create_backend
from stylecast.backends.package import load_package, locate_package
from stylecast.model import BUILTIN_DIR, data
from stylecast.model.preprocess import center_crop_square, content_image, style_image, to_uint8
from stylecast.model.teacher import TEACHER_SIZE, Teacher

SIZE = TEACHER_SIZE


def centred_cos(a: np.ndarray, b: np.ndarray, mean: np.ndarray) -> np.ndarray:
    a, b = a - mean, b - mean
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def gray_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two RGB [0,1] images on luma, Gaussian window 11, σ 1.5 (Wang et al. 2004)."""
    w = np.array([0.299, 0.587, 0.114], np.float64)
    a, b = x.astype(np.float64) @ w, y.astype(np.float64) @ w
    g = np.exp(-0.5 * (np.arange(11) - 5) ** 2 / 1.5**2)
    g /= g.sum()

    def blur(z):  # separable 'valid' Gaussian filter
        z = np.lib.stride_tricks.sliding_window_view(z, 11, axis=0) @ g
        return np.lib.stride_tricks.sliding_window_view(z, 11, axis=1) @ g

    c1, c2 = 0.01**2, 0.03**2
    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma**2, blur(b * b) - mb**2, blur(a * b) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return float(s.mean())


def psnr(x: np.ndarray, y: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((x.astype(np.float64) - y) ** 2) + 1e-12))


def to_256(img: np.ndarray) -> np.ndarray:
    """An output as the predictor sees a style image (the serving preprocessing)."""
    return style_image(Image.fromarray(to_uint8(img)))


def square(path: Path, size: int) -> np.ndarray:
    return content_image(center_crop_square(Image.open(path)), (size, size))


def evaluate(package_dir: Path, fmt: str, root: Path, threads: int, limit: int | None = None,
             sheet: Path | None = None) -> dict[str, dict[str, float]]:
    teacher = Teacher(root / "models" / "magenta", threads=threads)
    backend = create_backend("litert")
    backend.load(load_package(package_dir), BackendOptions(format=fmt, threads=threads))
    train_vecs = teacher.predict_style(np.stack([style_image(Image.open(p)) for p in data.training_images(root)]))
    mean = train_vecs.mean(0)
    styles = data.heldout_styles(root)
    contents = data.val_content(root)[:limit]
    s_imgs = np.stack([style_image(Image.open(p)) for p in styles])
    style_squares = [square(p, SIZE) for p in styles]
    t_vec, b_vec = teacher.predict_style(s_imgs), backend.predict_style(s_imgs)
    rows: dict[str, dict[str, list[float]]] = {}

    def add(name: str, out: np.ndarray, content: np.ndarray, s: int, ref: np.ndarray | None = None):
        r = rows.setdefault(name, {"style": [], "ssim": [], "psnr": []})
        r["style"].append(float(centred_cos(teacher.predict_style(to_256(out)[None])[0], t_vec[s], mean)))
        r["ssim"].append(gray_ssim(out, content))
        if ref is not None:
            r["psnr"].append(psnr(out, ref))

    cells = []
    for ci, path in enumerate(contents):
        c = square(path, SIZE)
        own = teacher.predict_style(to_256(c)[None])[0]
        for s in range(len(styles)):
            t_out = teacher.stylize(c[None], t_vec[s][None])[0]
            b_out = backend.stylize(c[None], t_vec[s][None])[0]
            p_out = backend.stylize(c[None], b_vec[s][None])[0]
            add("teacher", t_out, c, s)
            add("builtin transformer (teacher vector)", b_out, c, s, t_out)
            add("builtin pipeline (own predictor)", p_out, c, s, t_out)
            add("teacher at half strength", teacher.stylize(c[None], (0.5 * t_vec[s] + 0.5 * own)[None])[0], c, s)
            add("content itself", c, c, s)
            add("style image itself", style_squares[s], c, s)
            if sheet is not None and ci < 4 and s < 5:
                cells.append((ci, s, c, t_out, p_out))
    out = {k: {m: float(np.mean(v)) for m, v in r.items() if v} for k, r in rows.items()}
    out["predictor"] = {"centred_cos_heldout": float(centred_cos(b_vec, t_vec, mean).mean())}
    backend.close()
    if sheet is not None:
        contact_sheet(cells, s_imgs, sheet)
    return out


def contact_sheet(cells, style_imgs: np.ndarray, path: Path, cell: int = 160) -> None:
    """Rows: content, then teacher and built-in outputs per style column."""
    n_c = max(c[0] for c in cells) + 1
    n_s = max(c[1] for c in cells) + 1
    sheet = Image.new("RGB", ((n_s + 1) * cell, (1 + 2 * n_c) * cell + 20), "white")
    draw = ImageDraw.Draw(sheet)
    u8 = lambda a: Image.fromarray(to_uint8(a)).resize((cell, cell))  # noqa: E731
    for s in range(n_s):
        sheet.paste(u8(style_imgs[s]), ((s + 1) * cell, 20))
    draw.text((4, 4), "styles (held out) ->   rows: content | teacher | built-in", fill="black")
    for ci, s, c, t_out, b_out in cells:
        y = 20 + (1 + 2 * ci) * cell
        sheet.paste(u8(c), (0, y))
        sheet.paste(u8(t_out), ((s + 1) * cell, y))
        sheet.paste(u8(b_out), ((s + 1) * cell, y + cell))
        draw.text((4, y + cell + 4), "teacher ^ / built-in v", fill="black")
    sheet.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)  # keep the committed PNG small


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Evaluate a model package against the Magenta teacher.")
    ap.add_argument("--package", type=Path, default=None)
    ap.add_argument("--format", default="tflite-int8")
    ap.add_argument("--assets", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="first N val images only")
    ap.add_argument("--sheet", type=Path, default=None, help="write a contact sheet PNG")
    args = ap.parse_args(argv)
    root = args.assets or data.assets_dir()
    if not (root / "models" / "magenta").is_dir():
        raise SystemExit(f"teacher assets not found under {root} (set STYLECAST_ASSETS)")
    pkg = args.package or locate_package(BUILTIN_DIR).path
    res = evaluate(pkg, args.format, root, args.threads, args.limit, args.sheet)
    n = len(data.val_content(root)[:args.limit])
    print(f"package {pkg} ({args.format}) on {n} val images x {len(data.HELDOUT_STYLES)} held-out styles at {SIZE}^2")
    print(f"{'':40s} {'style':>7s} {'SSIM':>7s} {'PSNR dB':>8s}")
    for name, r in res.items():
        if name == "predictor":
            continue
        print(f"{name:40s} {r['style']:7.3f} {r['ssim']:7.3f} {r.get('psnr', float('nan')):8.2f}")
    t = res["teacher"]
    for name in ("builtin transformer (teacher vector)", "builtin pipeline (own predictor)"):
        r = res[name]
        print(f"{name}: style gap {t['style'] - r['style']:+.3f} (goal <= 0.05), "
              f"SSIM gap {abs(t['ssim'] - r['ssim']):.3f} (goal <= 0.05)")
    print(f"predictor centred cosine to teacher on held-out styles: "
          f"{res['predictor']['centred_cos_heldout']:.3f} (goal >= 0.90)")


if __name__ == "__main__":
    main()
