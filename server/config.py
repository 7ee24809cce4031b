"""The one server configuration object, built in one place.

Precedence: CLI flags > environment (``STYLECAST_<FIELD>``) > TOML file > defaults.
Nothing here reads the environment at import time: :func:`load_config` is handed
the mapping to read.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stylecast.backends.base import CONV_ALGO_SEARCH, BackendOptions

ENV_PREFIX = "STYLECAST_"
SQLITE = "sqlite:///"
REDIS_SCHEMES = ("redis://", "rediss://")
MiB = 1 << 20
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or malformed."""


@dataclass(frozen=True)
class ServerConfig:
    """Every knob of ``stylecast serve``; passed down explicitly, never global."""

    # "" = loopback ("localhost") without a tokens file, every interface ("[::]") with one; another
    # address without authentication needs allow_unauthenticated (see the README's Security section)
    host: str = ""
    port: int = 50051                 # 0 = any free port (tests)
    metrics_port: int = 9090          # 0 = no metrics endpoint
    backend: str = "auto"             # "auto" | litert | savedmodel | onnx | cuda | tensorrt | tf-trt
    format: str = ""                  # package artifact; "" = the backend's default
    threads: int = 0                  # intra-op threads per inference worker; 0 = auto (packages.layout)
    workers: int = 0                  # inference workers (interpreters / sessions); 0 = auto
    codec_threads: int = 2            # image decode/encode threads
    malloc_arenas: int = 0            # glibc malloc arenas of the server process; 0 = auto (packages.malloc_arenas)
    malloc_trim_s: float = 30.0       # hand memory malloc keeps free back to the kernel this often; 0 = never
    xla: bool = False                 # savedmodel: jit_compile
    precision: str = "fp16"           # tensorrt, tf-trt: fp16 | fp32
    engine_cache_dir: str = ""        # tensorrt, tf-trt engines; "" = ~/.cache/stylecast
    gpu_device: int = 0               # cuda, tensorrt, tf-trt: which GPU (CUDA's numbering)
    cudnn_conv_algo_search: str = "EXHAUSTIVE"  # cuda, tensorrt: EXHAUSTIVE | HEURISTIC | DEFAULT
    models_dir: str = ""              # "" = the package's built-in models
    model: str = ""                   # model name; "" = the only model in models_dir (built-in: stylecast-small)
    model_version: str = ""           # "" = the latest version
    # A/B test from the start: "VERSION=PERCENT,…" of ``model``, summing to 100; every version named
    # is loaded (the default one first: model_version, else the heaviest).  "" = one version.
    traffic_split: str = ""
    quality_sample_every: int = 100   # online quality: score one answered frame in N (0 = off)
    # "backend:format" entries, comma-separated: the first is loaded before serving starts, each
    # later one in the background and swapped in once warmed up (cross-backend upgrades only when
    # named here).  "" = just the artifact chosen by ``backend`` / ``format``.
    load_order: str = ""
    warmup_sizes: str = "256x256"     # HxW content sizes each artifact runs once before serving
    upload_dir: str = ""              # uploaded packages; "" = ~/.stylecast/models
    max_upload_bytes: int = 4 << 30   # per uploaded package
    # ModelAdmin (upload/load/unload models): with authentication on the main port for the admin
    # role; without, on loopback only: the main port when ``host`` is a loopback address, else
    # 127.0.0.1:admin_port (0 = any port).
    admin: bool = True
    admin_port: int = 50052
    # sqlite:///PATH (one replica) or redis://[:PASSWORD@]HOST:PORT/DB, rediss://… (replicas share
    # it; the password may come from STYLECAST_REDIS_PASSWORD instead); "" = sqlite:///~/.stylecast/styles.db
    style_store: str = ""
    redis_password: str = dataclasses.field(default="", repr=False)  # used when style_store's URL has none
    max_batch: int = 1                # frames per inference batch
    max_wait_ms: float = 0.0          # how long a batch may wait to fill
    queue_depth: int = 8              # frames in flight per EVERY_FRAME stream
    max_streams: int = 64             # concurrent Stylize streams
    max_calls: int = 128              # concurrent calls per other method
    max_message_bytes: int = 64 * MiB
    max_pixels: int = 40_000_000      # per image, checked before decoding
    process_max_side: int = 512       # default longer side for inference
    content_vector_refresh: int = 30  # frames between content-vector refreshes
    grace_s: float = 10.0             # shutdown grace for in-flight calls
    keepalive_time_s: float = 30.0
    keepalive_timeout_s: float = 10.0
    log_level: str = "INFO"
    # security
    tokens_file: str = ""             # TOML [[tokens]] (name, roles, sha256); "" = no authentication
    allow_unauthenticated: bool = False  # listen beyond loopback without a tokens file
    tls_cert: str = ""                # PEM certificate chain; with tls_key turns TLS on
    tls_key: str = ""                 # PEM private key
    tls_client_ca: str = ""           # PEM CA: clients must present a certificate it signed (mTLS)
    metrics_tls: bool = False         # serve /metrics over HTTPS with tls_cert/tls_key (and tls_client_ca)
    health_port: int = 0              # plaintext grpc.health.v1 only, on host (for probes without TLS); 0 = off
    max_process_side: int = 2048      # ceiling on a stream's process_max_side
    stream_buffer_bytes: int = 32 * MiB   # request + answer bytes one stream may hold before reading pauses
    frame_memory_bytes: int = 1024 * MiB  # all streams together; new streams are refused beyond it
    stall_timeout_s: float = 60.0     # a stream whose answers cannot be sent for this long is ended

    def __post_init__(self) -> None:
        positive = ("codec_threads", "max_batch", "queue_depth", "max_streams",
                    "max_calls", "max_message_bytes", "max_pixels", "process_max_side",
                    "content_vector_refresh", "max_process_side", "stream_buffer_bytes", "frame_memory_bytes")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not all(0 <= p < 65536 for p in (self.port, self.metrics_port, self.admin_port, self.health_port)):
            raise ConfigError("ports must be in 0..65535")
        if self.malloc_arenas < 0:
            raise ConfigError(f"malloc_arenas must be >= 0 (0 = auto), got {self.malloc_arenas}")
        if self.threads < 0 or self.workers < 0:
            raise ConfigError(f"threads and workers must be >= 0 (0 = auto), got {self.threads}, {self.workers}")
        if self.max_wait_ms < 0 or self.grace_s < 0 or self.malloc_trim_s < 0:
            raise ConfigError("max_wait_ms, grace_s and malloc_trim_s must be >= 0")
        if self.precision not in ("fp16", "fp32"):
            raise ConfigError(f"precision must be fp16 or fp32, got {self.precision!r}")
        if self.gpu_device < 0:
            raise ConfigError(f"gpu_device must be >= 0, got {self.gpu_device}")
        object.__setattr__(self, "cudnn_conv_algo_search", self.cudnn_conv_algo_search.upper())
        if self.cudnn_conv_algo_search not in CONV_ALGO_SEARCH:
            raise ConfigError(f"cudnn_conv_algo_search must be one of {', '.join(CONV_ALGO_SEARCH)}, "
                              f"got {self.cudnn_conv_algo_search!r}")
        if self.max_upload_bytes < 1:
            raise ConfigError(f"max_upload_bytes must be >= 1, got {self.max_upload_bytes}")
        if self.process_max_side > self.max_process_side:
            raise ConfigError(f"process_max_side {self.process_max_side} is above max_process_side "
                              f"{self.max_process_side}")
        if self.stall_timeout_s <= 0:
            raise ConfigError(f"stall_timeout_s must be > 0, got {self.stall_timeout_s}")
        if self.quality_sample_every < 0:
            raise ConfigError(f"quality_sample_every must be >= 0 (0 = off), got {self.quality_sample_every}")
        if not (self.keepalive_time_s > 0 and self.keepalive_timeout_s > 0):
            raise ConfigError(f"keepalive_time_s and keepalive_timeout_s must be > 0, got {self.keepalive_time_s}, "
                              f"{self.keepalive_timeout_s}")
        if self.log_level.upper() not in LOG_LEVELS:  # not getLevelName: libraries register more (VERBOSE)
            raise ConfigError(f"log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {self.log_level!r}")
        self._check_split()
        self._check_security()
        self.load_entries, self.warmup_shapes  # noqa: B018 - validate both now
        if not self.style_store:
            object.__setattr__(self, "style_store", f"{SQLITE}{Path.home() / '.stylecast' / 'styles.db'}")
        try:
            check_style_store(self.style_store)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def _check_split(self) -> None:
        weights = self.split_weights
        if not weights:
            return
        if any(not 0 <= p <= 100 for p in weights.values()) or sum(weights.values()) != 100:
            raise ConfigError(f"traffic_split: weights must be percentages 0..100 summing to 100, got "
                              f"{self.traffic_split!r}")
        if self.model_version and self.model_version not in weights:
            raise ConfigError(f"traffic_split {self.traffic_split!r} does not name model_version "
                              f"{self.model_version!r}; add it (weight 0 is fine) or leave model_version empty")

    @property
    def split_weights(self) -> dict[str, int]:
        """``traffic_split`` as version → percent (empty: one version)."""
        try:
            return parse_split(self.traffic_split)
        except ValueError as exc:
            raise ConfigError(f"traffic_split: {exc}") from None

    @property
    def split_versions(self) -> tuple[str, ...]:
        """The versions to load at start, the default first: ``model_version``, else the heaviest
        version of the split ("" alone: no split, the configured or latest version)."""
        weights = self.split_weights
        if not weights:
            return (self.model_version,)
        first = self.model_version or max(weights, key=lambda v: weights[v])
        return (first, *(v for v in weights if v != first))

    def _check_security(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("TLS needs both tls_cert and tls_key")
        if (self.tls_client_ca or self.metrics_tls) and not self.tls:
            raise ConfigError("tls_client_ca and metrics_tls need TLS: set tls_cert and tls_key")
        if not self.host:
            object.__setattr__(self, "host", "[::]" if self.auth else "localhost")
        if not (self.auth or self.loopback or self.allow_unauthenticated):
            raise ConfigError(f"refusing to listen on {self.host} without authentication: anyone who reaches "
                              "it could delete styles and load the server. Set tokens_file (stylecast token new "
                              "makes tokens), listen on localhost, or pass --allow-unauthenticated")

    @property
    def auth(self) -> bool:
        """Whether calls need a bearer token (a tokens file is configured)."""
        return bool(self.tokens_file)

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    @property
    def loopback(self) -> bool:
        """Whether ``host`` is reachable from this machine only."""
        return self.host.strip("[]") in ("127.0.0.1", "::1", "localhost")

    @property
    def load_entries(self) -> tuple[tuple[str, str], ...]:
        """``load_order`` as (backend, format) pairs."""
        return parse_load_order(self.load_order.split(","))

    @property
    def warmup_shapes(self) -> tuple[tuple[int, int], ...]:
        """``warmup_sizes`` as (H, W) pairs."""
        shapes = []
        for item in filter(None, (s.strip() for s in self.warmup_sizes.lower().split(","))):
            h, sep, w = item.partition("x")
            if not sep or not h.isdigit() or not w.isdigit() or not 0 < int(h) <= 8192 or not 0 < int(w) <= 8192:
                raise ConfigError(f"warmup_sizes: expected HxW entries (1..8192), got {item!r}")
            shapes.append((int(h), int(w)))
        return tuple(shapes)

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file of a ``sqlite:///PATH`` style store (None for Redis)."""
        return Path(self.style_store[len(SQLITE):]) if self.style_store.startswith(SQLITE) else None

    def backend_options(self, fmt: str, threads: int, workers: int) -> BackendOptions:
        """What a backend loading artifact ``fmt`` with ``workers`` workers of ``threads``
        intra-op threads each (``packages.layout``) needs of this configuration."""
        return BackendOptions(format=fmt, threads=threads, workers=workers, xla=self.xla,
                              device_id=self.gpu_device, max_batch=self.max_batch,
                              frame_sizes=self.frame_sizes, precision=self.precision,
                              engine_cache_dir=self.engine_cache_dir or None,
                              cudnn_conv_algo_search=self.cudnn_conv_algo_search)

    @property
    def frame_sizes(self) -> tuple[tuple[int, int], ...]:
        """(H, W) sizes the GPU engines must cover, the typical first: the warmup sizes, then
        the largest frame ``process_max_side`` lets through (either orientation)."""
        side = self.process_max_side
        return (*self.warmup_shapes, (side, side))

    @property
    def upload_root(self) -> Path:
        return Path(self.upload_dir) if self.upload_dir else Path.home() / ".stylecast" / "models"

    @property
    def admin_on_main_port(self) -> bool:
        """ModelAdmin shares the main port when calls need the admin role, or the port is loopback only."""
        return self.auth or self.loopback

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def check_style_store(url: str) -> str:
    """``url`` if it names a style store (``sqlite:///PATH``, ``redis://…``, ``rediss://…``; a
    Redis URL as redis-py parses it, with a numeric port and database); raises ValueError
    otherwise."""
    if url.startswith(SQLITE) and len(url) > len(SQLITE):
        return url
    if url.startswith(REDIS_SCHEMES):
        from redis.connection import parse_url  # noqa: PLC0415 - redis only for a Redis store

        try:
            parse_url(url)
        except ValueError as exc:
            raise ValueError(f"style_store: {exc} (expected redis://[:PASSWORD@]HOST:PORT/DB)") from None
        db = urlsplit(url).path.strip("/")
        if db and not db.isdigit():
            raise ValueError(f"style_store: database {db!r} is not a number (expected redis://HOST:PORT/DB)")
        return url
    raise ValueError(f"style_store: expected sqlite:///PATH, redis://HOST:PORT/DB or rediss://…, got {url!r}")


def parse_split(text: str) -> dict[str, int]:
    """``"4=80,5=20"`` → ``{"4": 80, "5": 20}`` (blank → empty); raises ValueError on syntax
    (the sum and versions are checked later)."""
    out: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        version, sep, percent = item.partition("=")
        version, percent = version.strip(), percent.strip()
        if not sep or not version or not percent:
            raise ValueError(f"expected VERSION=PERCENT entries, got {item!r}")
        if not percent.lstrip("-").isdigit():
            raise ValueError(f"{item!r}: PERCENT must be a whole percent 0..100 (VERSION=PERCENT, e.g. 4=80)")
        if version in out:
            raise ValueError(f"version {version!r} appears twice")
        out[version] = int(percent)
    return out


def parse_load_order(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``backend:format`` strings as (backend, format) pairs; blank items are skipped."""
    entries = []
    for item in filter(None, (s.strip() for s in items)):
        backend, sep, fmt = item.partition(":")
        if not sep or not backend or not fmt:
            raise ConfigError(f"load_order: expected backend:format entries, got {item!r}")
        entries.append((backend, fmt))
    return tuple(entries)


_FIELDS = {f.name: f for f in dataclasses.fields(ServerConfig)}
# STYLECAST_* variables that are not server settings: the config path, the CLI client's own and
# the model tools' assets folder
_NOT_SERVER = frozenset({"CONFIG", "TOKEN", "TLS_CA", "TARGET", "ADMIN_TARGET", "ASSETS"})


def _coerce(name: str, value: Any) -> Any:
    kind = type(getattr(ServerConfig, name))
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        out = kind(value)
        if kind is float and not math.isfinite(out):
            raise ValueError(value)
        return out
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected {'a finite ' if kind is float else ''}{kind.__name__}, "
                          f"got {value!r}") from None


def _layer(source: str, values: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in _FIELDS:
            raise ConfigError(f"{source}: unknown setting {key!r} (known: {', '.join(_FIELDS)})")
        out[name] = _coerce(name, value)
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML file: a ``[server]`` table, or top-level keys."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    return data.get("server", data)


def load_config(cli_overrides: Mapping[str, Any], env: Mapping[str, str],
                toml_path: str | Path | None = None) -> ServerConfig:
    """Merge defaults < TOML < environment < CLI flags (``None`` flags are unset).

    The TOML path may also come from ``STYLECAST_CONFIG``; a ``config`` key in
    ``cli_overrides`` is ignored (pass it as ``toml_path``).
    """
    toml_path = toml_path or env.get(f"{ENV_PREFIX}CONFIG")
    values: dict[str, Any] = {}
    if toml_path:
        values |= _layer(str(toml_path), read_toml(toml_path))
    values |= _layer("environment", {k[len(ENV_PREFIX):].lower(): v for k, v in env.items()
                                     if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX):] not in _NOT_SERVER})
    values |= _layer("flags", {k: v for k, v in cli_overrides.items() if v is not None and k != "config"})
    if values.get("style_store") and "://" not in values["style_store"]:  # a bare path: SQLite
        values["style_store"] = f"sqlite:///{values['style_store']}"
    return ServerConfig(**values)
