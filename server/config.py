"""The one server configuration object, built in one place.

Precedence: CLI flags > environment (``STYLECAST_<FIELD>``) > TOML file > defaults.
Nothing here reads the environment at import time: :func:`load_config` is handed
the mapping to read.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_PREFIX = "STYLECAST_"
MiB = 1 << 20


class ConfigError(ValueError):
    """A configuration value is missing, unknown or malformed."""


@dataclass(frozen=True)
class ServerConfig:
    """Every knob of ``stylecast serve``; passed down explicitly, never global."""

    host: str = "[::]"
    port: int = 50051                 # 0 = any free port (tests)
    metrics_port: int = 9090          # 0 = no metrics endpoint
    backend: str = "auto"             # "auto" | litert | savedmodel | onnx | tensorrt
    format: str = ""                  # package artifact; "" = the backend's default
    threads: int = 0                  # intra-op threads per inference worker; 0 = auto (models.layout)
    workers: int = 0                  # inference workers (interpreters / sessions); 0 = auto
    codec_threads: int = 2            # image decode/encode threads
    xla: bool = False                 # savedmodel: jit_compile
    precision: str = "fp16"           # tensorrt, tf-trt: fp16 | fp32
    engine_cache_dir: str = ""        # tensorrt, tf-trt engines; "" = ~/.cache/stylecast
    models_dir: str = ""              # "" = the package's built-in models
    model: str = ""                   # model name; "" = the only model in models_dir
    model_version: str = ""           # "" = the latest version
    # "backend:format" entries, comma-separated: the first is loaded before serving starts, each
    # later one in the background and swapped in once warmed up (cross-backend upgrades only when
    # named here).  "" = just the artifact chosen by ``backend`` / ``format``.
    load_order: str = ""
    warmup_sizes: str = "256x256"     # HxW content sizes each artifact runs once before serving
    upload_dir: str = ""              # uploaded packages; "" = ~/.stylecast/models
    max_upload_bytes: int = 4 << 30   # per uploaded package
    # ModelAdmin (upload/load/unload models) listens on loopback only until auth exists: on the
    # main port when ``host`` is a loopback address, else on 127.0.0.1:admin_port (0 = any port).
    admin: bool = True
    admin_port: int = 50052
    styles_db: str = ""               # "" = ~/.stylecast/styles.db
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

    def __post_init__(self) -> None:
        positive = ("codec_threads", "max_batch", "queue_depth", "max_streams",
                    "max_calls", "max_message_bytes", "max_pixels", "process_max_side",
                    "content_vector_refresh")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not all(0 <= p < 65536 for p in (self.port, self.metrics_port, self.admin_port)):
            raise ConfigError("ports must be in 0..65535")
        if self.threads < 0 or self.workers < 0:
            raise ConfigError(f"threads and workers must be >= 0 (0 = auto), got {self.threads}, {self.workers}")
        if self.max_wait_ms < 0 or self.grace_s < 0:
            raise ConfigError("max_wait_ms and grace_s must be >= 0")
        if self.precision not in ("fp16", "fp32"):
            raise ConfigError(f"precision must be fp16 or fp32, got {self.precision!r}")
        if self.max_upload_bytes < 1:
            raise ConfigError(f"max_upload_bytes must be >= 1, got {self.max_upload_bytes}")
        self.load_entries, self.warmup_shapes  # noqa: B018 - validate both now

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
        """ModelAdmin shares the main port only when that port is reachable from loopback alone."""
        return self.host.strip("[]") in ("127.0.0.1", "::1", "localhost")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


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
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected {kind.__name__}, got {value!r}") from None


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
                                     if k.startswith(ENV_PREFIX) and k != f"{ENV_PREFIX}CONFIG"})
    values |= _layer("flags", {k: v for k, v in cli_overrides.items() if v is not None and k != "config"})
    if not values.get("styles_db"):
        values["styles_db"] = str(Path.home() / ".stylecast" / "styles.db")
    return ServerConfig(**values)
