"""``make bench-memory``: resident memory of ``stylecast serve`` through a serving day, and where it goes.

Phases, one server process (run it from the edge install: LiteRT, no TensorFlow):

1. started: SERVING, one style registered, idle;
2. serving one 512² raw stream (EVERY_FRAME): RSS sampled every 0.5 s, frames/s and server CPU
   per frame (the speed that glibc keeping freed frame buffers buys must stay);
3. a mixed workload: a short 640×360 video through ``stylize_video``, large photos through
   ``StylizeImage`` (4000×3000 and 1920×1080 JPEG, 2048² PNG), four 384² JPEG streams;
4. idle again, then the 512² stream again: how close RSS comes back to (2).

Prints RSS (and USS, PSS where ``/proc/PID/smaps_rollup`` exists) per phase against the
112 MB anchor (Magenta's 512² model on a Snapdragon 865, the seed's table), and the mappings
that hold the most resident memory at the end.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.serving import CLI, Setup, cpu_seconds, resolve, server

ANCHOR_MB = 112.0


def memory_mb(pid: int) -> dict[str, float]:
    """RSS, and PSS / USS (private) from smaps_rollup, in MB."""
    out = {}
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        out["rss"] = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (OSError, AttributeError):
        return out
    fields = {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+) kB", rollup, re.M)}
    out["pss"] = fields.get("Pss", 0) / 1024
    out["uss"] = (fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)) / 1024
    out["anon"] = fields.get("Anonymous", 0) / 1024
    return out


def top_mappings(pid: int, n: int = 12) -> list[tuple[str, float]]:
    """Resident MB per mapping name (libraries by file name, anonymous memory as one line)."""
    rss: Counter[str] = Counter()
    name = "?"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            name = Path(head[5]).name if len(head) > 5 else "[anonymous]"
        elif head and head[0] == "Rss:":
            rss[name] += int(head[1]) / 1024
    return rss.most_common(n)


class Sampler:
    """RSS of ``pid`` every ``interval`` seconds on a thread, until stopped."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid, self.interval, self.values = pid, interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.values.append(memory_mb(self.pid).get("rss", float("nan")))

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        return self.values


def faults_and_system_s(pid: int) -> tuple[int, float]:
    """Minor page faults and system CPU seconds of a process so far, all threads (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[7]), int(fields[12]) / os.sysconf("SC_CLK_TCK")


def stream_512(client, style_id: str, pid: int, seconds: float) -> dict[str, float]:
    """One EVERY_FRAME 512² raw stream for ``seconds``: frames/s, CPU ms (of it system), minor page
    faults per frame, RSS over its second half (the first half allocates the interpreter and warms
    the allocator)."""
    from stylecast.client.loadgen import synthetic_image

    frames = [synthetic_image(512, i) for i in range(4)]
    stop_at = time.perf_counter() + seconds
    half = time.perf_counter() + seconds / 2
    sampler, cpu0, faults0, t0, count = Sampler(pid), None, (0, 0.0), 0.0, 0

    def source():
        i = 0
        while time.perf_counter() < stop_at:
            yield frames[i % 4]
            i += 1

    for result in client.stream(source(), style_id, output="raw"):
        if cpu0 is None and time.perf_counter() >= half:
            cpu0, faults0, t0, count = cpu_seconds(pid), faults_and_system_s(pid), time.perf_counter(), 0
        count += result.ok
    cpu1, faults1, t1 = cpu_seconds(pid), faults_and_system_s(pid), time.perf_counter()
    values = sampler.stop()
    tail = values[len(values) // 2:] or [float("nan")]
    return {"fps": count / (t1 - t0), "cpu_ms": (cpu1 - cpu0) / max(count, 1) * 1e3,
            "faults": (faults1[0] - faults0[0]) / max(count, 1),
            "sys_ms": (faults1[1] - faults0[1]) / max(count, 1) * 1e3,
            "rss_median": float(np.median(tail)), "rss_max": float(np.max(values or [float("nan")]))}


def write_video(path: Path, frames: int = 90) -> None:
    import av

    from stylecast.client.loadgen import synthetic_image

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        base = synthetic_image(640, 7)[:360]
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.roll(base, 4 * i, axis=1), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def photo(width: int, height: int, fmt: str) -> bytes:
    from PIL import Image

    from stylecast.client.loadgen import synthetic_image

    side = max(width, height)
    img = Image.fromarray(synthetic_image(min(side, 1024), 3)).resize((width, height), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 1}))
    return buf.getvalue()


def mixed(client, style_id: str, workdir: Path, target: str) -> None:
    from stylecast.client.video import stylize_video

    video = workdir / "clip.mp4"
    write_video(video)
    stylize_video(client, video, workdir / "out.mp4", style_id)
    for w, h, fmt in ((4000, 3000, "JPEG"), (1920, 1080, "JPEG"), (2048, 2048, "PNG")):
        client.stylize(photo(w, h, fmt), style_id, output="jpeg")
    subprocess.run(CLI + ["bench", "--json", "--target", target, "--streams", "4", "--seconds", "8", "--size", "384",
                          "--wire", "jpeg", "--warmup", "0.5"], check=True, capture_output=True)


def line(label: str, mem: dict[str, float], extra: str = "") -> str:
    rss = mem.get("rss", float("nan"))
    return (f"  {label:<34} RSS {rss:6.1f} MB ({rss / ANCHOR_MB:4.2f}x anchor)   "
            f"PSS {mem.get('pss', float('nan')):6.1f}   USS {mem.get('uss', float('nan')):6.1f}   "
            f"anon {mem.get('anon', float('nan')):6.1f} MB{extra}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", default="")
    parser.add_argument("--model", default="")
    parser.add_argument("--backend", default="litert")
    parser.add_argument("--format", default="")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=16.0, help="length of each 512² stream")
    args = parser.parse_args(argv)
    args.warmup = 0.0
    from stylecast.client.loadgen import synthetic_image
    from stylecast.client.sdk import Client

    setup: Setup = resolve(args)
    print(f"stylecast serve memory: backend {setup.backend} ({setup.format}), {setup.workers} worker(s) x "
          f"{setup.threads} thread(s); anchor {ANCHOR_MB:g} MB; TensorFlow importable: "
          f"{__import__('importlib').util.find_spec('tensorflow') is not None}; load average "
          f"{os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="stylecast-memory-") as tmp, server(setup, Path(tmp)) as srv, \
            Client(srv.target) as client:
        workdir = Path(tmp)
        style_id = client.register_style(synthetic_image(256, 1234), name="bench").id
        time.sleep(1.0)
        print(line("started, one style registered", memory_mb(srv.pid)))
        s1 = stream_512(client, style_id, srv.pid, args.seconds)
        print(line("serving one 512² raw stream", {**memory_mb(srv.pid), "rss": s1["rss_median"]},
                   f"   (max {s1['rss_max']:.1f}; {s1['fps']:.1f} frames/s, {s1['cpu_ms']:.1f} ms CPU and "
                   f"{s1['sys_ms']:.1f} system; {s1['faults']:.0f} minor faults per frame)"))
        peak = Sampler(srv.pid)
        mixed(client, style_id, workdir, srv.target)
        print(line("mixed workload (peak)", {"rss": max(peak.stop() or [float("nan")])}))
        time.sleep(5.0)
        print(line("idle 5 s after the mixed workload", memory_mb(srv.pid)))
        s2 = stream_512(client, style_id, srv.pid, args.seconds)
        print(line("one 512² raw stream again", {**memory_mb(srv.pid), "rss": s2["rss_median"]},
                   f"   (max {s2['rss_max']:.1f}; {s2['fps']:.1f} frames/s, {s2['cpu_ms']:.1f} ms CPU and "
                   f"{s2['sys_ms']:.1f} system; {s2['faults']:.0f} minor faults per frame; "
                   f"{s2['rss_median'] / s1['rss_median']:.2f}x the first)"))
        print("  resident MB by mapping at the end:")
        for name, mb in top_mappings(srv.pid):
            print(f"    {mb:7.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
