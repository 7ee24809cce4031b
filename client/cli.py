"""The ``stylecast`` command line: stylize images and videos, manage styles, benchmark, serve.

Heavy modules (PyAV, the server, TensorFlow) are imported inside the commands
that need them, so ``stylecast --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from stylecast.client.channel import DEFAULT_TARGET
from stylecast.client.errors import NotFound, StylecastError
from stylecast.client.sdk import Client

app = typer.Typer(name="stylecast", no_args_is_help=True, add_completion=False,
                  help="Real-time arbitrary style transfer over gRPC.")
styles_app = typer.Typer(no_args_is_help=True, help="Register, list and delete styles.")
model_app = typer.Typer(no_args_is_help=True, help="Build model packages.")
app.add_typer(styles_app, name="styles")
models_app = typer.Typer(no_args_is_help=True, help="Upload, load, unload, list and watch models on a server "
                                                    "(ModelAdmin: the admin role, or loopback only).")
app.add_typer(model_app, name="model")
app.add_typer(models_app, name="models")
token_app = typer.Typer(no_args_is_help=True, help="Bearer tokens for a server's tokens file.")
certs_app = typer.Typer(no_args_is_help=True, help="Certificates for trying TLS.")
app.add_typer(token_app, name="token")
app.add_typer(certs_app, name="certs")

Target = Annotated[str, typer.Option("--target", "-t", help="Server address HOST:PORT, or any gRPC target: "
                                     "several replicas as ipv4:H1:P1,H2:P2 or dns:///NAME:PORT (calls are "
                                     "balanced round-robin over healthy replicas).",
                                     envvar="STYLECAST_TARGET")]
Token = Annotated[str | None, typer.Option("--token", help="Bearer token.", envvar="STYLECAST_TOKEN")]
TlsCa = Annotated[Path | None, typer.Option("--tls-ca", dir_okay=False, envvar="STYLECAST_TLS_CA",
                                            help="PEM CA of the server's certificate (turns TLS on).")]
TlsCert = Annotated[Path | None, typer.Option("--tls-cert", dir_okay=False,
                                              help="PEM client certificate, for a server requiring mTLS.")]
TlsKey = Annotated[Path | None, typer.Option("--tls-key", dir_okay=False, help="PEM key of --tls-cert.")]
AdminTarget = Annotated[str, typer.Option("--target", "-t", help="ModelAdmin address HOST:PORT (the server's "
                                          "main port with authentication or on loopback; its admin port when "
                                          "it runs --allow-unauthenticated on another address).",
                                          envvar="STYLECAST_ADMIN_TARGET")]
DEFAULT_ADMIN_TARGET = DEFAULT_TARGET
StyleOpt = Annotated[str, typer.Option("--style", "-s", help="A style image path (registered on the fly) "
                                                                "or a registered style id.")]
Strength = Annotated[float | None, typer.Option("--strength", min=0.0, max=1.0,
                                                    help="1 = full style, 0 = the content only.")]
Size = Annotated[int, typer.Option("--size", min=0, help="Longer side used for inference "
                                                         "(0 = server default, 512); output keeps the input size.")]
_SUFFIX_ENCODING = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".webp": "webp"}


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def printable(text: str) -> str:
    """``text`` with control and other non-printable characters escaped (names come from servers)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


@contextmanager
def _client(target: str, token: str | None, ca: Path | None = None, cert: Path | None = None,
            key: Path | None = None) -> Iterator[Client]:
    """A connected client; SDK errors (and images the SDK cannot send, or --tls-cert without
    --tls-key) become one line and exit status 1."""
    try:
        with Client(target, token=token, ca=ca, cert=cert, key=key) as client:
            yield client
    except (StylecastError, ValueError) as exc:
        raise _fail(str(exc)) from None


def _resolve_style(client: Client, style: str) -> str:
    """A style id: registers ``style`` first when it names an image file; a path that does not
    exist, or an id the server does not know, fails with one line saying so."""
    path = Path(style)
    if path.is_file():
        return client.register_style(path, name=path.stem).id
    if path.suffix or "/" in style or os.sep in style:
        raise _fail(f"--style {style}: no such file")
    try:
        return client.get_style(style).id
    except NotFound:
        raise _fail(f"--style {style}: NOT_FOUND: not a registered style id, nor an image file here "
                    "(register one with: stylecast styles add FILE)") from None


def _check_output_folder(output: Path, flag: str = "-o") -> None:
    if not output.parent.is_dir():
        raise _fail(f"{flag} {output}: folder {output.parent} does not exist")


def _check_image_paths(source: Path, output: Path) -> None:
    """Before anything is sent: the input is one picture PIL can read, the output suffix an image format."""
    from PIL import Image, UnidentifiedImageError

    _check_output_folder(output)
    fmt = Image.registered_extensions().get(output.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise _fail(f"-o {output}: the output needs an image suffix Pillow writes: .jpg, .png, .webp, .gif, .tiff, … "
                    f"(got {output.suffix or 'no suffix'})")
    try:
        with Image.open(source) as img:
            frames = getattr(img, "n_frames", 1)
    except (UnidentifiedImageError, OSError) as exc:
        raise _fail(f"{source} is not an image PIL can read ({exc}); pass a JPEG, PNG, WebP, GIF, BMP or TIFF") from None
    if frames > 1:
        raise _fail(f"{source} is animated ({frames} frames); stylize it with: "
                    f"stylecast video {source} --style STYLE -o {output.with_suffix('.mp4').name}")


@app.command()
def image(
    source: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Input image.")],
    style: StyleOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output image (.jpg, .png or .webp; other formats Pillow writes, e.g. .gif, .bmp, .tiff, "
                      "are converted from a lossless PNG answer).")],
    strength: Strength = None,
    size: Size = 0,
    quality: Annotated[int, typer.Option(min=0, max=100, help="JPEG/WebP quality (0 = server default).")] = 0,
    target: Target = DEFAULT_TARGET,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Stylize one image; writes a picture of the input's size."""
    from stylecast.client.types import Output

    _check_image_paths(source, output)
    encoding = _SUFFIX_ENCODING.get(output.suffix.lower(), "png")  # other formats are re-encoded losslessly
    with _client(target, token, tls_ca, tls_cert, tls_key) as client:
        result = client.stylize(source, _resolve_style(client, style), strength=strength,
                                output=Output(encoding, quality), process_max_side=size)
    result.save(output)
    t = result.timings
    typer.echo(f"{output}  {result.width}x{result.height}  infer {t.infer_ms:.1f} ms  "
               f"total {t.total_ms:.1f} ms  ({result.backend})" if t else str(output))


@app.command()
def video(
    source: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Input video.")],
    style: StyleOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output video (container from the suffix).")],
    strength: Strength = None,
    size: Size = 0,
    wire: Annotated[str, typer.Option(help="Frames on the wire: raw (lossless) or jpeg.")] = "raw",
    target: Target = DEFAULT_TARGET,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Stylize every frame of a video, keeping timestamps, rotation and audio tracks."""
    import av
    from tqdm import tqdm

    from stylecast.client.video import output_format, stylize_video

    if wire not in ("raw", "jpeg"):
        raise _fail(f"--wire must be raw or jpeg, not {wire!r}")
    _check_output_folder(output)
    try:
        output_format(output)
        with av.open(str(source)) as probe:
            if not probe.streams.video:
                raise _fail(f"{source} has no video stream")
            total = probe.streams.video[0].frames or None
    except (ValueError, av.error.FFmpegError) as exc:
        raise _fail(str(exc)) from None
    with _client(target, token, tls_ca, tls_cert, tls_key) as client:
        style_id = _resolve_style(client, style)
        with tqdm(total=total, unit="frame", desc=source.name) as bar:
            report = stylize_video(client, source, output, style_id, strength=strength,
                                   process_max_side=size, wire=wire, progress=bar)
    rotation = f", rotation {report.rotation}°" if report.rotation else ""
    typer.echo(f"{output}  {report.frames} frames, audio {report.audio}  ({report.width}x{report.height}{rotation})")
    for track in report.tracks:
        if track.outcome != "remuxed":
            typer.echo(f"{'warning: ' if track.outcome == 'dropped' else ''}{track.describe()}",
                       err=track.outcome == "dropped")


@styles_app.command("add")
def styles_add(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Style image.")],
    name: Annotated[str | None, typer.Option(help="Display name (default: the file name).")] = None,
    target: Target = DEFAULT_TARGET,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Register a style image; prints its id (idempotent: the id is the content hash)."""
    with _client(target, token, tls_ca, tls_cert, tls_key) as client:
        style = client.register_style(path, name=name if name is not None else path.stem)
    typer.echo(f"{style.id}\t{printable(style.name)}\t{'registered' if style.created else 'already registered'}")


@styles_app.command("list")
def styles_list(target: Target = DEFAULT_TARGET, token: Token = None, tls_ca: TlsCa = None,
                tls_cert: TlsCert = None, tls_key: TlsKey = None) -> None:
    """List registered styles: id, name, registration time."""
    with _client(target, token, tls_ca, tls_cert, tls_key) as client:
        for style in client.list_styles():
            when = style.created_at.isoformat(timespec="seconds") if style.created_at else "-"
            typer.echo(f"{style.id}\t{printable(style.name)}\t{when}")


@styles_app.command("rm")
def styles_rm(
    style_id: Annotated[str, typer.Argument(metavar="ID", help="Style id.")],
    target: Target = DEFAULT_TARGET,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Delete a style."""
    with _client(target, token, tls_ca, tls_cert, tls_key) as client:
        if not client.delete_style(style_id):
            raise _fail(f"no style {style_id}")
    typer.echo(f"deleted {style_id}")


@app.command()
def bench(
    streams: Annotated[int, typer.Option(min=1, help="Concurrent streams.")] = 1,
    seconds: Annotated[float, typer.Option(min=0.5, help="Measured seconds (after a warm-up).")] = 10.0,
    size: Annotated[int, typer.Option(min=16, help="Square frame side in pixels.")] = 384,
    wire: Annotated[str, typer.Option(help="raw (RGB24) or jpeg frames, both ways.")] = "raw",
    mode: Annotated[str, typer.Option(help="every_frame or live.")] = "every_frame",
    fps: Annotated[float, typer.Option(min=0.0, help="Frames per second per stream (0 = as fast as possible).")] = 0.0,
    warmup: Annotated[float, typer.Option(min=0.0, help="Warm-up seconds not measured.")] = 2.0,
    style: Annotated[str, typer.Option(help="Style id (default: a generated style).")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    target: Target = DEFAULT_TARGET,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Stream synthetic pre-encoded frames and print throughput and latency."""
    from stylecast.client.loadgen import run_load

    try:
        report = asyncio.run(run_load(target, streams=streams, seconds=seconds, size=size, wire=wire, mode=mode,
                                      fps=fps, warmup_s=warmup, style_id=style, token=token,
                                      ca=tls_ca, cert=tls_cert, key=tls_key))
    except (StylecastError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
        return
    typer.echo(f"{report.streams} stream(s) {report.size}x{report.size} {report.wire} {report.mode}: "
               f"{report.fps:.1f} FPS  p50 {report.p50_ms:.1f} ms  p99 {report.p99_ms:.1f} ms  "
               f"infer {report.infer_ms:.1f} ms  dropped {report.dropped}  errors {report.errors}")
    if report.first_error:
        typer.echo(f"first error: {report.first_error}", err=True)


@app.command()
def serve(
    port: Annotated[int | None, typer.Option(help="gRPC port (0 = any free port).")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus port (0 = off).")] = None,
    backend: Annotated[str | None, typer.Option(
        help="auto, litert, savedmodel, onnx, cuda, tensorrt or tf-trt.")] = None,
    threads: Annotated[int | None, typer.Option(help="Inference threads per worker.")] = None,
    workers: Annotated[int | None, typer.Option(help="Inference workers (frames run at once).")] = None,
    models_dir: Annotated[str | None, typer.Option(help="Model packages folder (default: built-in).")] = None,
    style_store: Annotated[str | None, typer.Option(help="Style library: sqlite:///PATH (default "
                                                    "~/.stylecast/styles.db) or redis://HOST:PORT/DB, rediss://… "
                                                    "shared by replicas (password: STYLECAST_REDIS_PASSWORD).")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file.")] = None,
    format: Annotated[str | None, typer.Option(help="Artifact format, e.g. tflite-int8.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name in the models folder.")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (a loopback host also serves "
                                                  "ModelAdmin on the main port).")] = None,
    load_order: Annotated[str | None, typer.Option(
        help="backend:format,... loaded first to last; each later one swaps in when warmed up.")] = None,
    traffic_split: Annotated[str | None, typer.Option(
        help="A/B test from the start: VERSION=PERCENT,... of --model summing to 100 (all loaded).")] = None,
    admin_port: Annotated[int | None, typer.Option(help="ModelAdmin port on 127.0.0.1 (non-loopback host).")] = None,
    upload_dir: Annotated[str | None, typer.Option(help="Folder for uploaded model packages.")] = None,
    tokens_file: Annotated[str | None, typer.Option(
        help="TOML [\\[tokens]] file (name, roles, sha256): calls need a bearer token; re-read on SIGHUP.")] = None,
    allow_unauthenticated: Annotated[bool | None, typer.Option(
        "--allow-unauthenticated", help="Listen on a non-loopback host without a tokens file.")] = None,
    tls_cert: Annotated[str | None, typer.Option(help="PEM server certificate chain (TLS).")] = None,
    tls_key: Annotated[str | None, typer.Option(help="PEM private key of --tls-cert.")] = None,
    tls_client_ca: Annotated[str | None, typer.Option(
        help="PEM CA: require client certificates it signed (mTLS).")] = None,
    metrics_tls: Annotated[bool | None, typer.Option(
        "--metrics-tls", help="Serve /metrics over HTTPS with --tls-cert/--tls-key (and --tls-client-ca).")] = None,
) -> None:
    """Run the gRPC server (flags > STYLECAST_* environment > TOML config)."""
    # The server runs in a fresh interpreter (same process id) without the CLI's libraries.
    flags = json.dumps({
        "port": port, "metrics_port": metrics_port, "backend": backend, "threads": threads, "workers": workers,
        "models_dir": models_dir, "style_store": style_store, "format": format, "model": model, "host": host,
        "load_order": load_order, "traffic_split": traffic_split, "admin_port": admin_port, "upload_dir": upload_dir,
        "tokens_file": tokens_file, "allow_unauthenticated": allow_unauthenticated, "tls_cert": tls_cert,
        "tls_key": tls_key, "tls_client_ca": tls_client_ca, "metrics_tls": metrics_tls,
        "config": str(config) if config else None})
    # numpy's OpenBLAS starts a worker thread at import, before the server caps glibc's malloc arenas;
    # when that thread mallocs first it keeps an arena of its own (1 start in 12 here). The server's
    # numpy work is small (style vectors), so one BLAS thread: none is started. A user's setting wins.
    env = {"OPENBLAS_NUM_THREADS": "1", **os.environ}
    os.execve(sys.executable, [sys.executable, "-m", "stylecast.server", flags], env)


@token_app.command("new")
def token_new(
    name: Annotated[str, typer.Option(help="Token name: the metrics label and log name (A-Z a-z 0-9 . _ -).")],
    roles: Annotated[str, typer.Option(help="Comma-separated roles: stylize, styles, admin.")] = "stylize",
) -> None:
    """Print a fresh random token (once, on stderr: the server keeps only its sha256) and its
    tokens-file entry (alone on stdout, so ``stylecast token new --name cam >> tokens.toml`` works)."""
    from stylecast.server.auth import new_token, tokens_entry

    token = new_token()
    try:
        entry = tokens_entry(name, [r.strip() for r in roles.split(",") if r.strip()], token)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"token (shown once; give it to the client as --token or STYLECAST_TOKEN):\n{token}\n"
               "its entry for the server's tokens file (then send the server SIGHUP) follows on stdout:", err=True)
    typer.echo(entry, nl=False)


@certs_app.command("dev")
def certs_dev(
    folder: Annotated[Path, typer.Argument(file_okay=False, help="Folder to write the PEM files into.")],
    host: Annotated[list[str] | None, typer.Option(
        "--host", help="Name or IP the server certificate is valid for (repeatable; default localhost, "
                       "127.0.0.1, ::1).")] = None,
    days: Annotated[int, typer.Option(min=1, help="Validity in days.")] = 30,
    overwrite: Annotated[bool, typer.Option(help="Replace existing files.")] = False,
) -> None:
    """Write a local CA, a server certificate and a client certificate, to try TLS and mTLS."""
    from stylecast.client.certs import DEFAULT_HOSTS, write_dev_certs

    try:
        certs = write_dev_certs(folder, tuple(host or DEFAULT_HOSTS), days, overwrite)
    except (FileExistsError, ValueError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"wrote {folder}/: ca.pem ca.key server.pem server.key client.pem client.key\n"
               f"server: stylecast serve --tls-cert {certs.server_cert} --tls-key {certs.server_key} "
               f"[--tls-client-ca {certs.ca}]\n"
               f"client: stylecast styles list --tls-ca {certs.ca} [--tls-cert {certs.client_cert} "
               f"--tls-key {certs.client_key}]")


def _model_line(m) -> str:
    active = m.active
    serving = f"{active.backend}:{active.format}" if active else "-"
    formats = ",".join(a.format for a in m.artifacts)
    return f"{m.name}\t{m.version}\t{m.state}\t{serving}\t{m.bytes}\t{formats}"


def _watch(client: Client, name: str, version: str) -> None:
    """One progress bar per artifact until nothing of the version is loading; fails on a failed artifact."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}
    last = None
    try:
        for info in client.watch_model(name, version):
            last = info
            for a in info.artifacts:
                if a.state == "available" and a.format not in bars:
                    continue
                bar = bars.get(a.format)
                if bar is None:
                    bar = bars[a.format] = tqdm(total=a.bytes, unit="B", unit_scale=True, leave=True,
                                                desc=f"{info.name}:{info.version} {a.format}")
                bar.n = a.bytes if a.state in ("active", "warming", "loading") else a.done_bytes
                bar.set_postfix_str(a.state if not a.error else f"failed: {a.error}")
                bar.refresh()
    finally:
        for bar in bars.values():
            bar.close()
    if last is not None:
        typer.echo(_model_line(last))
        failed = [a for a in last.artifacts if a.state == "failed"]
        if failed:
            raise _fail("; ".join(f"{a.format}: {a.error}" for a in failed))


@models_app.command("upload")
def models_upload(
    package: Annotated[Path, typer.Argument(exists=True, file_okay=False,
                                            help="Package folder NAME/VERSION (with manifest.json).")],
    load: Annotated[bool, typer.Option(help="Load (serve) it once uploaded.")] = False,
    target: AdminTarget = DEFAULT_ADMIN_TARGET,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Upload a model package in verified chunks; resumes an interrupted upload."""
    from tqdm import tqdm

    if not (package / "manifest.json").is_file():
        raise _fail(f"{package} holds no manifest.json: give a package folder NAME/VERSION "
                    "(stylecast model export writes one)")
    with _client(target, token, tls_ca, tls_cert, tls_key) as client, \
            tqdm(unit="B", unit_scale=True, desc=package.name) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        result = client.upload_model(package, progress=progress)
        bar.close()
        if result.already_installed:
            typer.echo(f"{result.name}:{result.version} already installed, identical (nothing sent; "
                       "its state is unchanged)")
        else:
            typer.echo(f"{result.name}:{result.version} uploaded ({result.total_bytes} bytes, "
                       f"{result.total_chunks} chunks verified)")
        if load:
            client.load_model(result.name, result.version)
            _watch(client, result.name, result.version)


@models_app.command("list")
def models_list(
    name: Annotated[str, typer.Argument(help="Only this model.")] = "",
    target: AdminTarget = DEFAULT_ADMIN_TARGET,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """List model packages: name, version, state, serving backend:format, bytes, formats."""
    with _client(target, token, tls_ca, tls_cert, tls_key) as client:
        for info in client.list_models(name):
            typer.echo(_model_line(info))
            for a in info.artifacts:
                if a.state not in ("available", "active") or a.error:
                    typer.echo(f"  {a.format}\t{a.state}\t{a.error}")


@models_app.command("load")
def models_load(
    name: Annotated[str, typer.Argument(help="Model name (default: the serving model).")] = "",
    version: Annotated[str, typer.Option(help="Version (default: the latest).")] = "",
    order: Annotated[list[str] | None, typer.Option(
        "--order", help="backend:format, first loaded first (repeatable; default: the server's).")] = None,
    watch: Annotated[bool, typer.Option(help="Show progress until the last artifact is active.")] = True,
    target: AdminTarget = DEFAULT_ADMIN_TARGET,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Serve a model version; better artifacts swap in as they become ready."""
    with _client(target, token, tls_ca, tls_cert, tls_key) as client:
        info = client.load_model(name, version, load_order=order or ())
        if watch:
            _watch(client, info.name, info.version)
        else:
            typer.echo(_model_line(info))


@models_app.command("unload")
def models_unload(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Version.")],
    delete: Annotated[bool, typer.Option(help="Also delete the uploaded package's files.")] = False,
    target: AdminTarget = DEFAULT_ADMIN_TARGET,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Stop a version loading (and delete an uploaded package)."""
    with _client(target, token, tls_ca, tls_cert, tls_key) as client:
        result = client.unload_model(name, version, delete_files=delete)
    if result.stopped_serving:
        typer.echo(f"{name}:{version}  unloaded: takes no new streams; draining {result.draining_streams} open "
                   f"stream{'s' if result.draining_streams != 1 else ''} (it closes once they end)")
    else:
        typer.echo(f"{name}:{version}  {'stopped loading' if result.unloaded else 'was not loading or serving'}"
                   f"{', files deleted' if result.deleted else ''}")


@models_app.command("split")
def models_split(
    weights: Annotated[list[str] | None, typer.Argument(
        help="VERSION=PERCENT entries summing to 100 (e.g. 4=80 5=20); none: show the split in force.")] = None,
    model: Annotated[str, typer.Option("--model", help="Model name (default: the served model).")] = "",
    target: AdminTarget = DEFAULT_ADMIN_TARGET,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """A/B test: share new streams and calls between versions of the served model (versions not
    loaded yet are loaded first; open streams keep their version).  Prints every loaded version:
    its share, open streams and serving artifact."""
    from stylecast.server.config import parse_split

    try:
        split = parse_split(",".join(weights or ()))
    except ValueError as exc:
        raise _fail(f"{exc} (e.g. stylecast models split 4=80 5=20)") from None
    with _client(target, token, tls_ca, tls_cert, tls_key) as client:
        versions = client.set_traffic_split(split, model) if split else client.traffic_split(model)
    for v in versions:
        typer.echo(f"{printable(v.version)}\t{v.percent}%\t{v.open_streams} streams\t"
                   f"{printable(v.backend)}:{printable(v.format)}{'  draining' if v.draining else ''}")


@models_app.command("watch")
def models_watch(
    name: Annotated[str, typer.Argument(help="Model name (default: the serving model).")] = "",
    version: Annotated[str, typer.Option(help="Version (default: the one loading or serving).")] = "",
    target: AdminTarget = DEFAULT_ADMIN_TARGET,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Progress bars per artifact until nothing of the version is loading."""
    with _client(target, token, tls_ca, tls_cert, tls_key) as client:
        _watch(client, name, version)


def _compare_model(spec: str, client: Callable[[], Client], fmt: str, threads: int):
    """A package folder, or NAME:VERSION on the server (the client is connected on first need)."""
    from stylecast.model.compare import PackageModel, ServerModel

    if Path(spec).is_dir():
        return PackageModel(Path(spec), fmt, threads)
    name, colon, version = spec.partition(":")
    if colon and name and version and "/" not in spec and os.sep not in spec:
        return ServerModel(client(), spec)
    raise _fail(f"{spec}: neither a package folder (NAME/VERSION with manifest.json) nor NAME:VERSION on a server")


@models_app.command("compare")
def models_compare(
    a: Annotated[str, typer.Argument(metavar="A", help="Package folder, or NAME:VERSION on the server.")],
    b: Annotated[str, typer.Argument(metavar="B", help="Package folder, or NAME:VERSION on the server.")],
    styles: Annotated[Path, typer.Option("--styles", help="Folder of style images (.jpg .png .webp).")] = Path("styles"),
    contents: Annotated[Path, typer.Option("--contents", help="Folder of content photos.")] = Path("content"),
    size: Annotated[int, typer.Option(min=64, help="Side of the square content pictures scored.")] = 384,
    speed_size: Annotated[list[int] | None, typer.Option(
        "--speed-size", min=16, help="Square side timed (repeatable; default 384 and 512).")] = None,
    speed_frames: Annotated[int, typer.Option(min=1, help="Frames per model per timing round.")] = 5,
    speed_rounds: Annotated[int, typer.Option(min=1, help="Timing rounds (the models alternate).")] = 2,
    sheet: Annotated[Path, typer.Option("--sheet", help="Contact sheet PNG to write.")] = Path("compare.png"),
    judge: Annotated[Path | None, typer.Option(
        file_okay=False, help="Package whose style predictor alone scores both models (default: A's and B's "
                              "predictors where they are package folders, plus the built-in package's "
                              "where a side is NAME:VERSION; each judge scores both).")] = None,
    format: Annotated[str, typer.Option(help="TFLite format of package folders: int8, fp16 or fp32 (or "
                                             "tflite-int8 …); default: each package's int8, else fp16, else "
                                             "fp32 (the header names each side's).")] = "",
    threads: Annotated[int, typer.Option(min=1, help="LiteRT threads for package folders.")] = 2,
    target: Annotated[str, typer.Option(
        "--target", "-t", envvar="STYLECAST_TARGET",
        help="Server of NAME:VERSION models: its stylize service (like `stylecast image`, so env "
             "STYLECAST_TARGET, not STYLECAST_ADMIN_TARGET).")] = DEFAULT_TARGET,
    token: Token = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Compare two models on your own styles and photos: style score, SSIM, flicker, speed, a verdict
    per metric and a contact sheet PNG side by side."""
    from contextlib import ExitStack

    from tqdm import tqdm

    from stylecast.model.compare import CompareError, PackageModel, builtin_package, compare, image_files

    _check_output_folder(sheet, "--sheet")
    if sheet.suffix.lower() != ".png":
        raise _fail(f"--sheet {sheet}: the contact sheet is a PNG (name it *.png)")
    with ExitStack() as stack:
        clients: list[Client] = []

        def client() -> Client:
            if not clients:
                clients.append(stack.enter_context(_client(target, token, tls_ca, tls_cert, tls_key)))
            return clients[0]

        try:
            style_files = image_files(styles, "--styles")
            content_files = image_files(contents, "--contents")
            models = []
            for ab, spec in zip("AB", (a, b)):
                try:
                    models.append(_compare_model(spec, client, format, threads))
                except CompareError as exc:
                    raise CompareError(f"{ab}: {exc}") from None
                stack.callback(models[-1].close)
            judges = [(f"{ab}'s predictor", m) for ab, m in zip("AB", models) if isinstance(m, PackageModel)]
            if judge is not None:
                judges = [("--judge's predictor", PackageModel(judge, "", threads))]
                stack.callback(judges[0][1].close)
            elif len(judges) < 2:  # a server model: the built-in predictor judges too (unless a folder is it)
                builtin = builtin_package()
                if not any(m.folder.resolve() == builtin.resolve() for _, m in judges):
                    judges.append(("built-in predictor", PackageModel(builtin, "", threads)))
                    stack.callback(judges[-1][1].close)
            sizes = tuple(speed_size or (384, 512))
            with tqdm(total=len(content_files) + len(sizes), unit="step", desc="compare", leave=False) as bar:
                report = compare(models[0], models[1], judges, style_files, content_files, size, sizes,
                                 speed_frames, speed_rounds, sheet, progress=bar.update)
        except CompareError as exc:
            raise _fail(str(exc)) from None
    for line in report.lines():
        typer.echo(line)


@model_app.command("export")
def model_export(
    checkpoint: Annotated[Path, typer.Argument(
        exists=True, file_okay=False, help="Training checkpoint folder (predictor.keras, transformer.keras).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Packages folder.")] = Path("models"),
    name: Annotated[str, typer.Option(help="Model name.")] = "stylecast-small",
    version: Annotated[str, typer.Option(help="Model version.")] = "1",
    formats: Annotated[list[str] | None,
                       typer.Option("--format", help="Formats to write (repeatable; default all).")] = None,
) -> None:
    """Export a training checkpoint to a model package (needs TensorFlow)."""
    from stylecast.model.export import export_checkpoint
    from stylecast.backends.package import FORMATS

    package = export_checkpoint(checkpoint, output, name, version, tuple(formats or FORMATS))
    typer.echo(f"{package.path}  formats: {', '.join(package.artifacts)}")


@model_app.command("import-magenta")
def model_import_magenta(
    predict: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Magenta style_predict *.tflite.")],
    transfer: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Magenta style_transfer *.tflite.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Packages folder.")] = Path("models"),
    name: Annotated[str, typer.Option(help="Model name.")] = "magenta",
    version: Annotated[str, typer.Option(help="Model version.")] = "1",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing NAME/VERSION.")] = False,
    resizable: Annotated[bool, typer.Option(
        help="Rewrite the transformer's baked 384² resizes so it runs at any size (no scaling).")] = False,
) -> None:
    """Wrap a user's own Magenta TFLite pair as a model package."""
    from stylecast.model.magenta import import_magenta
    from stylecast.backends.package import PackageError

    try:
        package = import_magenta(predict, transfer, output, name=name, version=version, overwrite=overwrite,
                                 resizable=resizable)
    except PackageError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{package.path}  formats: {', '.join(package.artifacts)}")


@model_app.command("export-mobile")
def model_export_mobile(
    package: Annotated[Path, typer.Argument(help="Package folder NAME/VERSION (with a savedmodel artifact).")],
    output: Annotated[Path, typer.Option("--output", "-o", file_okay=False, help="Folder to write into.")],
    size: Annotated[list[int] | None, typer.Option(
        "--size", help="Square frame side the app feeds, a multiple of 16 (repeatable; default 512).")] = None,
    precision: Annotated[list[str] | None, typer.Option(
        "--precision", help="TFLite weights: fp16, int8 (repeatable; default both).")] = None,
    coreml: Annotated[bool, typer.Option(help="Also write Core ML packages (needs coremltools).")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show the converters' own logs.")] = False,
) -> None:
    """Write TFLite (fp16, int8) and Core ML files with fixed input shapes, and mobile.json describing
    their inputs and outputs (needs TensorFlow; Core ML needs coremltools: the tf and mobile extras)."""
    from stylecast.model.mobile import PRECISIONS, MobileExportError, export_mobile, quiet_converters

    if not (package / "manifest.json").is_file():
        raise _fail(f"{package}: not a model package folder (no manifest.json)")
    try:
        with quiet_converters(verbose):
            manifest = export_mobile(package, output, tuple(size or (512,)), tuple(precision or PRECISIONS), coreml)
    except MobileExportError as exc:
        raise _fail(str(exc)) from None
    for entry in manifest["tflite"] + manifest["coreml"]:
        shapes = " ".join(f"{t['name']}{t['shape']}" for t in entry["inputs"] + entry["outputs"])
        typer.echo(f"{output / entry['file']}\t{entry['bytes']}\t{shapes}")
    typer.echo(f"{output / 'mobile.json'}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
