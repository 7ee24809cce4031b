"""``make bench``: what online quality costs, and what its scores say for the built-in model.

1. **Cost per sampled frame**: CPU time of one scoring (content SSIM at 128 px plus the style
   predictor on the output, in an interpreter of the scorer's own, one thread), as the scorer
   thread spends it, at ``--size``².
2. **Share of serving CPU at the default sampling**: that cost over ``quality_sample_every``
   frames' worth of inference CPU (the raw backend's, a lower bound of what serving a frame
   costs, so the share is an upper bound); goal < 2 %.
3. **Side by side**: one in-process server streaming ``--frames`` raw frames with sampling off,
   at the default and at every frame (ABC rounds, alternating), process CPU per frame (server
   and client together: both run in this process).
4. **What the scores mean** (needs ``../shared/assets``): the built-in model on the validation
   photos × the style paintings, mean style score against the requested style, against another
   style (what an output in the wrong style scores), and with strength 0 (the photo's own style
   vector), and mean content SSIM of each.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from stylecast.backends.base import BackendOptions, create_backend
from stylecast.model.preprocess import style_image, to_float, to_uint8
from stylecast.server.config import ServerConfig
from stylecast.server.online_quality import content_ssim, style_score
from stylecast.server.packages import find_package

ASSETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "assets"
DEFAULT_EVERY = ServerConfig.quality_sample_every


def _picture(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    f = rng.uniform(0.01, 0.08, 6)
    chans = [127.5 + 127.5 * np.sin(f[c] * x + c) * np.cos(f[c + 3] * y) for c in range(3)]
    return np.stack(chans, -1).astype(np.uint8)


def _backend(fmt: str, threads: int):
    backend = create_backend("litert")
    backend.load(find_package("", "stylecast-small"), BackendOptions(format=fmt, threads=threads, idle_s=0))
    return backend


def scoring_cost(fmt: str, size: int, repeat: int) -> tuple[float, float]:
    """(median CPU ms of one scoring, median CPU ms of one raw inference) at size², one thread."""
    backend = _backend(fmt, 1)
    try:
        content = _picture(size, 1)
        vec = backend.predict_style(to_float(_picture(256, 2)[None]))[0]
        mean = np.zeros_like(vec) + 0.1
        out = to_uint8(backend.stylize(to_float(content[None]), vec[None])[0])
        score, infer = [], []
        for _ in range(repeat):
            t = time.thread_time()
            content_ssim(content, out)
            style_score(backend.predict_style, out, vec, mean)
            score.append(time.thread_time() - t)
            t = time.thread_time()
            backend.stylize(to_float(content[None]), vec[None])
            infer.append(time.thread_time() - t)
        return statistics.median(score) * 1e3, statistics.median(infer) * 1e3
    finally:
        backend.close()


async def _served_cpu(every: int, size: int, frames: int, tmp: Path) -> tuple[float, int, int]:
    """(process CPU ms per frame of one raw stream through an in-process server, frames scored,
    samples dropped because the scorer was busy)."""
    import grpc

    from stylecast.server.app import start
    from stylecast.v1 import stylecast_pb2 as pb
    from stylecast.v1 import stylecast_pb2_grpc as pb_grpc

    config = ServerConfig(port=0, host="127.0.0.1", metrics_port=0, backend="litert", workers=2, threads=1,
                          style_store=f"sqlite:///{tmp / f'styles-{every}.db'}", quality_sample_every=every,
                          upload_dir=str(tmp / "uploads"), warmup_sizes=f"{size}x{size}")
    server = await start(config)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.StyleTransferStub(channel)
            style_ids = []
            for seed in range(4):  # enough styles for a style-score centre
                data = io.BytesIO()
                Image.fromarray(_picture(256, 10 + seed)).save(data, "PNG")
                style_ids.append((await stub.RegisterStyle(iter([pb.StyleUpload(chunk=data.getvalue())]))).style.id)
            img = _picture(size, 3)
            image = pb.Image(data=img.tobytes(), pixel_format=pb.PIXEL_FORMAT_RGB24, width=size, height=size)

            async def requests():
                yield pb.StylizeRequest(config=pb.StreamConfig(style_id=style_ids[0], output=pb.OutputOptions(
                    encoding=pb.ENCODING_RAW_RGB24)))
                for i in range(frames):
                    yield pb.StylizeRequest(frame=pb.Frame(id=i, image=image))

            t = time.process_time()
            answered = sum([1 async for r in stub.Stylize(requests()) if r.WhichOneof("msg") == "frame"])
            while server.engine.quality._queue.qsize():  # count the scoring of the last samples too
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            cpu = time.process_time() - t
            assert answered == frames
        name, version = server.engine.slot.model.key
        counts = [server.engine.metrics.registry.get_sample_value(
            "stylecast_quality_samples_total", {"model": name, "version": version, "outcome": o}) or 0
            for o in ("scored", "dropped")]
        return cpu / frames * 1e3, int(counts[0]), int(counts[1])
    finally:
        await server.stop(1.0)


def side_by_side(size: int, frames: int, rounds: int) -> dict[int, list[tuple[float, int, int]]]:
    out: dict[int, list[tuple[float, int, int]]] = {0: [], DEFAULT_EVERY: [], 1: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for every in (list(out) if r % 2 == 0 else list(out)[::-1]):
                out[every].append(asyncio.run(_served_cpu(every, size, frames, Path(tmp))))
    return out


def meaning(fmt: str, size: int, contents: int) -> dict[str, float] | None:
    """Mean scores of the built-in model over validation photos × style paintings."""
    styles_dir, content_dir = ASSETS / "styles", ASSETS / "content" / "val"
    if not styles_dir.is_dir() or not content_dir.is_dir():
        return None
    backend = _backend(fmt, 2)
    try:
        styles = sorted(styles_dir.glob("*.jpg"))
        vecs = np.stack([backend.predict_style(style_image(Image.open(p))[None])[0] for p in styles])
        mean = vecs.mean(0)
        photos = sorted(content_dir.glob("*.jpg"))[:contents]
        rows: dict[str, list[float]] = {k: [] for k in ("style", "other", "none", "ssim", "ssim_none")}
        for i, path in enumerate(photos):
            img = Image.open(path).convert("RGB")
            img.thumbnail((size, size))
            content = np.asarray(img)
            v_content = backend.predict_style(style_image(img)[None])[0]
            for s in range(len(styles)):
                out = to_uint8(backend.stylize(to_float(content[None]), vecs[s][None])[0])
                rows["style"].append(style_score(backend.predict_style, out, vecs[s], mean))
                rows["other"].append(style_score(backend.predict_style, out, vecs[(s + 1 + i) % len(styles)], mean))
                rows["ssim"].append(content_ssim(content, out))
            none = to_uint8(backend.stylize(to_float(content[None]), v_content[None])[0])  # strength 0
            for s in range(len(styles)):
                rows["none"].append(style_score(backend.predict_style, none, vecs[s], mean))
            rows["ssim_none"].append(content_ssim(content, none))
        return {k: float(np.mean(v)) for k, v in rows.items()} | {"styles": len(styles), "photos": len(photos)}
    finally:
        backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", default="tflite-int8", help="the served artifact (default: what serve picks)")
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--contents", type=int, default=8, help="validation photos for the meaning table")
    parser.add_argument("--skip-served", action="store_true")
    args = parser.parse_args()

    score_ms, infer_ms = scoring_cost(args.format, args.size, args.repeat)
    print(f"[quality] one sampled frame at {args.size}²: {score_ms:.1f} ms CPU (SSIM at 128 px + the style "
          f"predictor, one thread); one inference: {infer_ms:.1f} ms CPU ({args.format})")
    share = score_ms / (DEFAULT_EVERY * infer_ms) * 100
    print(f"[quality] at the default sampling (1 in {DEFAULT_EVERY}): {share:.2f} % of inference CPU "
          "(an upper bound of the share of serving CPU; goal < 2 %)")
    if not args.skip_served:
        served = side_by_side(args.size, args.frames, args.rounds)
        base = statistics.mean(r[0] for r in served[0])
        for every, runs in served.items():
            label = "off" if not every else f"1 in {every}"
            print(f"[quality] served stream {args.size}² raw, sampling {label}: "
                  f"{', '.join(f'{r[0]:.1f}' for r in runs)} ms process CPU per frame "
                  f"({statistics.mean(r[0] for r in runs) / base:.3f}× off); frames scored "
                  f"{', '.join(str(r[1]) for r in runs)}, dropped (scorer busy) "
                  f"{', '.join(str(r[2]) for r in runs)}")
    table = meaning(args.format, args.size, args.contents)
    if table is None:
        print("[quality] ../shared/assets not found: no score table for the built-in model")
        return
    print(f"[quality] built-in model, {table['photos']} validation photos × {table['styles']} styles "
          f"at ≤ {args.size} px:")
    print(f"  style score vs the requested style {table['style']:.3f}, vs another style {table['other']:.3f}, "
          f"the photo's own style (strength 0) {table['none']:.3f}")
    print(f"  content SSIM stylized {table['ssim']:.3f}, strength 0 {table['ssim_none']:.3f}")


if __name__ == "__main__":
    main()
