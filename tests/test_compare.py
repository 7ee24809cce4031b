"""``stylecast models compare A B``: package folders (the built-in model, an imported Magenta pair,
the tiny fixture) and a ``NAME:VERSION`` served by a real in-process server, on tiny folders of
styles and photos; then the mistakes that must end in one line and exit status 1."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import encoded, make_config, picture
from PIL import Image
from typer.testing import CliRunner

from stylecast.client.cli import app
from stylecast.model import data
from stylecast.model.compare import TOLERANCE, Verdict, builtin_package
from stylecast.model.magenta import import_magenta
from stylecast.model.quality import SHIFTS
from stylecast.server.app import start

ASSETS = data.assets_dir()
MAGENTA = ASSETS / "models" / "magenta"
needs_assets = pytest.mark.skipif(not MAGENTA.is_dir() or not (ASSETS / "content" / "val").is_dir(),
                                  reason=f"Magenta files and photos not found under {ASSETS} (../shared/assets)")
METRICS = ("style score", "SSIM to content", "flicker (0-255)")
FAST = ("--size", "96", "--speed-size", "64", "--speed-frames", "1", "--speed-rounds", "1")
CELL = 160  # contact sheet cell (model.scoring.contact_sheet's default)


def compare_cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["models", "compare", *(str(a) for a in args)])
    return result.exit_code, result.output


def table(output: str) -> dict[str, tuple[float, float]]:
    """metric -> (A, B) from the printed table."""
    rows = {}
    for line in output.splitlines():
        m = re.match(r"^(.+?)\s+(-?\d+\.\d+)\s+(-?\d+\.\d+)\s+\((higher|lower) is better\)$", line)
        if m:
            rows[m[1].strip()] = (float(m[2]), float(m[3]))
    return rows


def verdict(output: str, metric: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith(metric + ": ")]
    assert len(lines) == 1, f"no single verdict line for {metric}:\n{output}"
    assert re.match(rf"^{re.escape(metric)}: (about the same|A better by|B better by) ", lines[0]), lines[0]
    return lines[0]


def sheet_size(contents: int, styles: int, models: int = 2) -> tuple[int, int]:
    """The contact sheet's documented layout (model.scoring.contact_sheet): as wide as the styles
    need (4 cells at least), panning tiles shrunk to fit that width."""
    width = max(styles + 1, 4) * CELL
    pan = min(CELL, (width - CELL) // (len(SHIFTS) + 1))
    return width, (1 + models * contents) * CELL + 40 + models * pan


def test_verdicts_name_the_better_model_and_by_how_much() -> None:
    assert Verdict("style score", 0.50, 0.45, True, False, 0.02).line("A", "B") == \
        "style score: A better by 0.050 (0.500 vs 0.450; tolerance ±0.02)"
    assert Verdict("style score", 0.50, 0.49, True, False, 0.02).line("A", "B").startswith(
        "style score: about the same (0.500 vs 0.490; within ±0.02)")
    assert Verdict("flicker", 12.0, 9.0, False, True, 0.05).line("A", "B").startswith("flicker: B better by a factor of 1.33")
    assert Verdict("speed", 20.0, 10.0, True, True, 0.05).line("A", "B").startswith("speed: A better by a factor of 2.00")
    assert Verdict("speed", 20.0, 19.5, True, True, 0.05).line("A", "B").startswith("speed: about the same")
    assert Verdict("flicker", 10.0, 10.4, False, True, 0.05).line("A", "B") == \
        "flicker: about the same (10.000 vs 10.400; within a factor of 1.05)"
    # speed: a factor under 1.5 is run-to-run noise on a loaded machine
    fps = TOLERANCE["fps"]
    assert Verdict("speed", 14.0, 10.0, True, True, fps).line("A", "B") == \
        "speed: about the same (14.000 vs 10.000; within a factor of 1.50)"
    assert Verdict("speed", 10.0, 16.0, True, True, fps).line("A", "B") == \
        "speed: B better by a factor of 1.60 (10.000 vs 16.000; tolerance a factor of 1.50)"


@pytest.fixture
def synthetic_folders(tmp_path: Path) -> tuple[Path, Path]:
    styles, contents = tmp_path / "styles", tmp_path / "content"
    styles.mkdir()
    contents.mkdir()
    (styles / "waves.png").write_bytes(encoded(picture(300, 260, seed=3)))
    (contents / "photo.jpg").write_bytes(encoded(picture(200, 150, seed=4), "JPEG", quality=95))
    return styles, contents


@needs_assets
def test_builtin_against_an_imported_magenta_model(tmp_path: Path) -> None:
    styles, contents = tmp_path / "styles", tmp_path / "content"
    styles.mkdir()
    contents.mkdir()
    shutil.copy(ASSETS / "styles" / data.HELDOUT_STYLES[0], styles)
    for photo in data.val_content(ASSETS)[:2]:
        shutil.copy(photo, contents)
    magenta = import_magenta(MAGENTA / "style_predict_quantized_256.tflite",
                             MAGENTA / "style_transfer_quantized_384.tflite", tmp_path / "models", resizable=True)
    sheet = tmp_path / "sheet.png"
    # 192² (not FAST's 96²): at 96² a held-out painting's style score sits near 0 for either
    # built-in version (v4 0.04 / 0.004 by the two judges, v5 -0.02 / 0.02), at 192² 0.4-0.6.
    code, out = compare_cli(builtin_package(), magenta.path, "--styles", styles, "--contents", contents,
                            "--sheet", sheet, *FAST, "--size", "192")
    assert code == 0, out
    assert "style score judged by A's predictor; B's predictor" in out  # each model's own predictor judges both
    assert "warning: " not in out  # the --resizable import runs at the asked sizes
    rows = table(out)
    judged = ("style score (A's predictor)", "style score (B's predictor)")
    for metric in judged + METRICS[1:] + ("speed 64^2 (frames/s)",):
        verdict(out, metric)
        assert metric in rows
    for a_b in rows["SSIM to content"]:
        assert 0 < a_b < 1
    assert all(v > 0 for v in rows["flicker (0-255)"] + rows["speed 64^2 (frames/s)"])
    # both models carry the style by both judges: outputs sit on the painting's side of the set's centre
    assert all(v > 0 for metric in judged for v in rows[metric])
    with Image.open(sheet) as img:
        assert img.format == "PNG" and img.size == sheet_size(contents=2, styles=1)


async def test_a_package_against_the_same_model_on_a_server(server, tiny_models_dir, synthetic_folders,
                                                            tmp_path) -> None:
    """The tiny package here (fp32, LiteRT) and the same package served: every quality metric is about
    the same; the judge is A's predictor; the server's version is checked."""
    styles, contents = synthetic_folders
    sheet = tmp_path / "same.png"
    args = ("--styles", styles, "--contents", contents, "--format", "fp32", "--sheet", sheet,
            "--target", f"127.0.0.1:{server.port}", *FAST)
    code, out = await asyncio.to_thread(compare_cli, tiny_models_dir / "tiny" / "1", "tiny:1", *args)
    assert code == 0, out
    judged = ("style score (A's predictor)", "style score (built-in predictor)")
    for metric in judged + METRICS[1:]:
        assert verdict(out, metric).startswith(f"{metric}: about the same"), out
    verdict(out, "speed 64^2 (frames/s)")
    assert "B = tiny:1: tiny:1 on the server" in out
    assert f"A = tiny:1: package {tiny_models_dir / 'tiny' / '1'} (tflite-fp32, LiteRT" in out  # --format fp32
    # B is not a folder: A's predictor and the built-in one judge (as README says)
    assert f"style score judged by A's predictor; built-in predictor (package {builtin_package()})\n" in out
    with Image.open(sheet) as img:
        assert img.size == sheet_size(contents=1, styles=1)
    code, out = await asyncio.to_thread(compare_cli, tiny_models_dir / "tiny" / "1", "tiny:9", *args)
    assert code == 1 and "version '9' of model tiny is not loaded here" in out, out


async def test_two_versions_loaded_side_by_side_on_one_server(tiny_models_dir, tiny_v2_dir, synthetic_folders,
                                                              tmp_path) -> None:
    """tiny:1 and tiny:2 (two different random models) behind one server's traffic split, each call
    pinned to its version: the built-in predictor alone judges (neither is a folder), and the contact sheet
    shows two different models."""
    models = tmp_path / "models"
    for src in (tiny_models_dir / "tiny" / "1", tiny_v2_dir / "tiny" / "2"):
        shutil.copytree(src, models / "tiny" / src.name)
    server = await start(make_config(models, tmp_path, model="tiny", format="tflite-fp32", traffic_split="1=50,2=50",
                                     quality_sample_every=0))
    try:
        styles, contents = synthetic_folders
        sheet = tmp_path / "versions.png"
        code, out = await asyncio.to_thread(compare_cli, "tiny:1", "tiny:2", "--styles", styles, "--contents", contents,
                                            "--sheet", sheet, "--target", f"127.0.0.1:{server.port}", *FAST)
    finally:
        await server.stop(1.0)
    assert code == 0, out
    assert f"style score judged by built-in predictor (package {builtin_package()})\n" in out
    for metric in METRICS + ("speed 64^2 (frames/s)",):
        verdict(out, metric)
    a, b = table(out)["SSIM to content"]
    assert a != b  # two different models answered
    with Image.open(sheet) as img:
        assert img.size == sheet_size(contents=1, styles=1)


def test_a_transformer_baked_to_one_size_is_named(tiny_models_dir, synthetic_folders, tmp_path) -> None:
    """A package whose stylize file runs at one fixed size (a Magenta import without --resizable) is
    scored at that size, scaled: the header says so, naming the side and the fix."""
    baked = tmp_path / "baked" / "tiny" / "1"
    shutil.copytree(tiny_models_dir / "tiny" / "1", baked)
    manifest = json.loads((baked / "manifest.json").read_text())
    manifest["artifacts"]["tflite-fp32"]["endpoints"]["stylize"]["fixed_hw"] = [128, 128]
    (baked / "manifest.json").write_text(json.dumps(manifest))
    styles, contents = synthetic_folders
    code, out = compare_cli(tiny_models_dir / "tiny" / "1", baked, "--styles", styles, "--contents", contents,
                            "--format", "fp32", "--sheet", tmp_path / "s.png", *FAST)
    assert code == 0, out
    assert f"B = tiny:1: package {baked} (tflite-fp32, LiteRT, 2 threads, stylizes at its fixed 128x128)" in out
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert warnings == ["warning: B (tiny:1) stylizes every picture at its fixed 128x128 (scaled to it and back), "
                        "not at 96^2, 64^2: not like-for-like; for a Magenta model, import it with --resizable "
                        "(stylecast model import-magenta ... --resizable)"], out


@needs_assets
def test_a_magenta_import_without_resizable_is_baked_to_384(tmp_path: Path) -> None:
    from stylecast.model.compare import PackageModel

    for resizable, fixed in ((False, (384, 384)), (True, None)):
        pkg = import_magenta(MAGENTA / "style_predict_quantized_256.tflite",
                             MAGENTA / "style_transfer_quantized_384.tflite", tmp_path / str(resizable),
                             resizable=resizable)
        model = PackageModel(pkg.path)
        try:
            assert model.fixed_hw == fixed
        finally:
            model.close()


@pytest.mark.parametrize("mistake, message", [
    ("missing-styles", "--styles folder {styles}: no such folder"),
    ("empty-contents", "--contents folder {contents}: no images"),
    ("broken-image", "not an image PIL can read"),
    ("bad-package", "failed to load"),
    ("neither", "neither a package folder"),
    ("sheet-suffix", "the contact sheet is a PNG"),
    ("sheet-folder", "--sheet {sheet}: folder {sheet.parent} does not exist"),
    ("contents-file", "--contents {contents}: a file, not a folder"),
    ("format-missing", "B: package {b} failed to load: has no tflite-fp16 artifact (its TFLite formats: "
                       "tflite-int8, tflite-fp32; leave out --format"),
    ("format-unknown", "A: --format fp64: one of int8, fp16, fp32"),
])
def test_mistakes_end_in_one_line_and_exit_1(mistake, message, tiny_models_dir, tiny_v2_dir, synthetic_folders,
                                             tmp_path) -> None:
    styles, contents = synthetic_folders
    a, b, sheet = tiny_models_dir / "tiny" / "1", tiny_models_dir / "tiny" / "1", tmp_path / "s.png"
    more: tuple[str, ...] = ()
    if mistake == "missing-styles":
        shutil.rmtree(styles)
    elif mistake == "empty-contents":
        for p in contents.iterdir():
            p.unlink()
    elif mistake == "broken-image":
        (contents / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    elif mistake == "bad-package":
        b = tmp_path / "broken" / "1"
        b.mkdir(parents=True)
        (b / "manifest.json").write_text("{not json")
    elif mistake == "neither":
        b = tmp_path / "no" / "such" / "folder"
    elif mistake == "sheet-suffix":
        sheet = tmp_path / "s.jpg"
    elif mistake == "sheet-folder":
        sheet = tmp_path / "no" / "such" / "s.png"
    elif mistake == "contents-file":
        contents = contents / "photo.jpg"
    elif mistake == "format-missing":  # tiny/1 has every format, tiny/2 no fp16
        b, more = tiny_v2_dir / "tiny" / "2", ("--format", "fp16")
    elif mistake == "format-unknown":
        more = ("--format", "fp64")
    code, out = compare_cli(a, b, "--styles", styles, "--contents", contents, "--sheet", sheet, *FAST, *more)
    assert code == 1, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    assert message.format(styles=styles, contents=contents, b=b, sheet=sheet) in lines[0], out
    assert not sheet.exists()
