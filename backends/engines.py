"""TensorRT engines, shared by ORT-TensorRT and TF-TRT: optimisation profiles from the
configured frame sizes, and the on-disk cache that lets a restart skip the build.

**Profiles.**  TensorRT builds an engine for a range of input shapes (an optimisation
profile: min / opt / max).  A frame outside the range would need a new engine (seconds,
mid-stream), so the range is set once from the configuration: H and W from 16 up to
the largest configured frame side (``warmup_sizes`` and ``process_max_side``, padded to
16), batch from 1 to ``max_batch``; the engine is tuned for the first configured size.
A larger frame is scaled to fit the range and back (:func:`fit_within`), never rebuilt.

**Cache key.**  An engine is valid for one model, precision and profile, and one GPU
and runtime: the key hashes the artifact's file digests (the package's sha256s),
the precision, the profile shapes and the runtime versions with the GPU model, so a
changed model, setting, driver stack or GPU builds afresh instead of loading a stale
engine.  Entries are written under a scratch name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stylecast.backends.base import PAD_MULTIPLE, BackendError
from stylecast.backends.fit import resize_bilinear, stylize_inputs
from stylecast.backends.package import ModelPackage

DEFAULT_CACHE_ROOT = Path("~/.cache/stylecast")
PRECISIONS = ("fp16", "fp32")
KEY_FILE = "key.json"


def _padded(side: int) -> int:
    return -(-side // PAD_MULTIPLE) * PAD_MULTIPLE


@dataclass(frozen=True)
class Profile:
    """One optimisation profile of the transformer's content input, as (batch, H, W) triples."""

    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]

    def __post_init__(self) -> None:
        if not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)) or min(self.min) < 1:
            raise BackendError(f"bad optimisation profile {self.min} ≤ {self.opt} ≤ {self.max}")

    def holds(self, batch: int, h: int, w: int) -> bool:
        return all(lo <= v <= hi for lo, v, hi in zip(self.min, (batch, h, w), self.max))


def content_profile(frame_sizes: Sequence[tuple[int, int]], max_batch: int) -> Profile:
    """The profile for content frames of ``frame_sizes`` ((H, W), the first the typical one)
    in batches of up to ``max_batch``: H, W from 16 to the largest side, tuned for the first size.

    The box is square (largest side both ways) so portrait and landscape frames share it.
    Raises :class:`BackendError` for no sizes, a size < 1 or ``max_batch`` < 1."""
    if not frame_sizes or min(min(s) for s in frame_sizes) < 1 or max_batch < 1:
        raise BackendError(f"optimisation profile needs frame sizes ≥ 1 and max_batch ≥ 1, "
                           f"got {list(frame_sizes)} and {max_batch}")
    side = _padded(max(max(s) for s in frame_sizes))
    h, w = (_padded(v) for v in frame_sizes[0])
    return Profile((1, PAD_MULTIPLE, PAD_MULTIPLE), (max_batch, h, w), (max_batch, side, side))


def fit_within(h: int, w: int, profile: Profile) -> tuple[int, int] | None:
    """The size (multiples of 16) to scale an H×W frame to so it fits ``profile``, keeping its
    aspect; None when its padded size already fits."""
    ph, pw = _padded(h), _padded(w)
    if ph <= profile.max[1] and pw <= profile.max[2]:
        return None
    scale = min(profile.max[1] / h, profile.max[2] / w)
    fit = lambda v, cap: max(PAD_MULTIPLE, min(cap, int(v * scale) // PAD_MULTIPLE * PAD_MULTIPLE))  # noqa: E731
    return fit(h, profile.max[1]), fit(w, profile.max[2])


def input_shapes(shape: Sequence[int | str | None], role: str, profile: Profile,
                 style_max_batch: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """(min, opt, max) shapes of one model input whose declared ``shape`` has symbolic or
    unknown dims (``str``/``None``/-1), for its contract ``role`` (``content``, ``style``,
    ``image``); None when the input is fully static.

    Batch (dim 0) follows the profile (``image``: 1 … ``style_max_batch``); ``content``'s
    dims 1 and 2 are H and W.  Raises :class:`BackendError` for any other dynamic dim."""
    dynamic = [i for i, d in enumerate(shape) if not isinstance(d, int) or d < 0]
    if not dynamic:
        return None
    out: list[list[int]] = [[], [], []]
    for i, d in enumerate(shape):
        if i not in dynamic:
            values: tuple[int, ...] = (int(d),) * 3
        elif i == 0:
            values = (1, 1, style_max_batch) if role == "image" else tuple(p[0] for p in (profile.min, profile.opt, profile.max))
        elif role == "content" and i in (1, 2):
            values = tuple(p[i] for p in (profile.min, profile.opt, profile.max))
        else:
            raise BackendError(f"{role} input {list(shape)}: dim {i} is dynamic; only the batch "
                               "(and the content's H and W) may be")
        for k in range(3):
            out[k].append(values[k])
    return tuple(out[0]), tuple(out[1]), tuple(out[2])


def artifact_digest(package: ModelPackage, fmt: str) -> str:
    """sha256 over the (path, sha256) of every file of the ``fmt`` artifact: the model's identity."""
    lines = sorted(f"{f.path}\0{f.sha256}" for f in package.artifact(fmt).files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def cache_key(package: ModelPackage, fmt: str, precision: str, profile: Profile,
              runtime: Mapping[str, str]) -> dict[str, object]:
    """What an engine depends on, as a JSON-able mapping (its hash names the cache folder)."""
    if precision not in PRECISIONS:
        raise BackendError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return {"model": package.key, "format": fmt, "artifact_sha256": artifact_digest(package, fmt),
            "precision": precision, "profile": [list(profile.min), list(profile.opt), list(profile.max)],
            "runtime": dict(sorted(runtime.items()))}


class EngineCache:
    """Folders of built engines under ``root/KIND/NAME-VERSION/HASH`` keyed by :func:`cache_key`.

    ``folder`` is where a runtime that manages its own files (ORT's TensorRT provider)
    keeps them; ``publish`` builds an entry elsewhere and renames it into place, for
    runtimes that write a whole converted model (TF-TRT)."""

    def __init__(self, root: str | os.PathLike[str] | None, kind: str, key: Mapping[str, object]) -> None:
        self.key = dict(key)
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:16]
        model = str(self.key["model"]).replace(":", "-").replace("/", "_")
        self.folder = Path(root or DEFAULT_CACHE_ROOT).expanduser() / kind / model / digest

    def ready(self) -> bool:
        """An entry with this exact key is in place."""
        try:
            return json.loads((self.folder / KEY_FILE).read_text()) == json.loads(json.dumps(self.key))
        except (OSError, ValueError):
            return False

    def prepare(self) -> Path:
        """Create the folder (with its key file) for a runtime that fills it itself."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not self.ready():
                _write_key(self.folder, self.key)
        except OSError as exc:
            raise BackendError(f"engine cache {self.folder}: {exc}") from exc
        return self.folder

    def publish(self, build: Callable[[Path], None]) -> Path:
        """Run ``build(scratch)`` to fill a new entry and rename it into place; another process
        that got there first wins.  A failed build leaves nothing behind."""
        try:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=self.folder.parent))
        except OSError as exc:
            raise BackendError(f"engine cache {self.folder.parent}: {exc}") from exc
        try:
            build(scratch)
            _write_key(scratch, self.key)
            if self.folder.exists() and not self.ready():
                shutil.rmtree(self.folder)      # a stale or half-written entry
            try:
                scratch.rename(self.folder)
            except OSError:
                if not self.ready():
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return self.folder


def _write_key(folder: Path, key: Mapping[str, object]) -> None:
    (folder / KEY_FILE).write_text(json.dumps(key, indent=1, sort_keys=True) + "\n")


class WithinProfile:
    """Mixin for :class:`~stylecast.backends.session_backend.SessionBackend` subclasses whose engines cover one
    :class:`Profile` (set ``_profile`` in ``load``): a larger batch runs in slices of the
    profile's batch, a larger frame is scaled to fit the profile and back."""

    _profile: Profile | None = None
    _style_dim: int

    def _call(self, endpoint: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
        call = super()._call  # type: ignore[misc]
        n = next(iter(arrays.values())).shape[0]
        limit = self._profile.max[0] if self._profile else n
        if n <= limit:
            return call(endpoint, arrays)
        return np.concatenate([call(endpoint, {k: a[i:i + limit] for k, a in arrays.items()})
                               for i in range(0, n, limit)])

    def stylize(self, content: np.ndarray, styles: np.ndarray) -> np.ndarray:
        """As the protocol says; a frame larger than the profile runs scaled to fit it."""
        if self._profile is None:
            return super().stylize(content, styles)  # type: ignore[misc]  # raises: no model loaded
        content, styles = stylize_inputs(content, styles, self._style_dim)
        h, w = content.shape[1:3]
        target = fit_within(h, w, self._profile)
        if target is None:
            return super().stylize(content, styles)  # type: ignore[misc]
        return resize_bilinear(super().stylize(resize_bilinear(content, target), styles), (h, w))  # type: ignore[misc]
