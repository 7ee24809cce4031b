"""Finding the model package to serve and choosing the backend and artifact format for it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from stylecast.backends.base import BackendUnavailable, backend_names, best_available, is_installed
from stylecast.model import BUILTIN_DIR
from stylecast.model.package import MANIFEST, ModelPackage, load_package
from stylecast.server.config import ServerConfig
from stylecast.server.errors import FailedPrecondition

# Artifact formats each backend can load, best first.
BACKEND_FORMATS = {
    "litert": ("tflite-int8", "tflite-fp16", "tflite-fp32"),
    "savedmodel": ("savedmodel",),
    "onnx": ("onnx",),
    "cuda": ("onnx",),
    "tensorrt": ("onnx",),
    "tf-trt": ("savedmodel",),
}


def _version_key(version: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in version.replace("-", ".").split("."))


def model_dirs(root: Path) -> dict[str, Path]:
    """Model name -> folder, for every ``root/NAME`` holding at least one ``VERSION/manifest.json``."""
    if not root.is_dir():
        return {}
    return {d.name: d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")
            and any((v / MANIFEST).is_file() for v in d.iterdir())}


def version_dirs(roots: Sequence[Path], name: str) -> dict[str, Path]:
    """Version -> folder of model ``name`` over ``roots`` (an earlier root wins), oldest first."""
    found: dict[str, Path] = {}
    for root in roots:
        folder = root / name
        if folder.is_dir():
            for v in folder.iterdir():
                if (v / MANIFEST).is_file():
                    found.setdefault(v.name, v)
    return {v: found[v] for v in sorted(found, key=_version_key)}


def find_package(models_dir: str | Path, name: str = "", version: str = "",
                 also: Sequence[Path] = ()) -> ModelPackage:
    """The package ``models_dir/NAME/VERSION``: the only model when ``name`` is empty,
    the latest version when ``version`` is empty.  ``also``: more roots searched for
    versions of that model (uploaded packages)."""
    root = Path(models_dir) if models_dir else BUILTIN_DIR
    models = sorted(model_dirs(root))
    if not name:
        if len(models) != 1:
            found = ", ".join(models) or "none"
            raise FailedPrecondition(f"{root}: expected exactly one model package (NAME/VERSION/{MANIFEST}), "
                                     f"found {found}; choose one with --model")
        name = models[0]
    versions = version_dirs([root, *also], name)
    if not versions:
        raise FailedPrecondition(f"model {name!r} not found in {root} (have: {', '.join(models) or 'none'})")
    if version and version not in versions:
        raise FailedPrecondition(f"model {name} has no version {version!r} (have: {', '.join(versions)})")
    return load_package(versions[version or list(versions)[-1]])


def layout(config: ServerConfig, backend: str) -> tuple[int, int]:
    """(workers, threads per worker) for ``backend``; a 0 in the config is chosen here, as
    ``make bench`` measured best on CPUs: LiteRT runs one single-threaded interpreter per
    core (parallel interpreters beat one multi-threaded one), the other backends one session
    over every core (TensorFlow's shared thread pools lose with parallel calls)."""
    cpus = os.cpu_count() or 1
    workers = config.workers or (max(1, cpus // (config.threads or 1)) if backend == "litert" else 1)
    return workers, config.threads or max(1, cpus // workers)


def choose_backend(config: ServerConfig, package: ModelPackage) -> tuple[str, str]:
    """(backend name, artifact format) for this config and package; ``auto`` prefers a GPU."""
    name = config.backend
    if name == "auto":
        try:
            name = best_available()
        except BackendUnavailable as exc:
            raise FailedPrecondition(str(exc)) from None
        if not any(f in package.artifacts for f in BACKEND_FORMATS[name]):  # e.g. a GPU but no ONNX artifact
            name = next((n for n in ("litert", "savedmodel") if is_installed(n)), name)
    if name not in BACKEND_FORMATS:
        raise FailedPrecondition(f"unknown backend {name!r}; choose auto or one of {', '.join(backend_names())}")
    if config.format:
        if config.format not in BACKEND_FORMATS[name]:
            raise FailedPrecondition(f"backend {name} cannot load format {config.format!r} "
                                     f"(it loads {', '.join(BACKEND_FORMATS[name])})")
        return name, config.format
    for fmt in BACKEND_FORMATS[name]:
        if fmt in package.artifacts:
            return name, fmt
    raise FailedPrecondition(f"model {package.key} has no artifact backend {name} can load "
                             f"(needs one of {', '.join(BACKEND_FORMATS[name])})")


def load_order(config: ServerConfig, package: ModelPackage,
               requested: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """(backend, format) pairs to load, first first: ``requested``, else ``config.load_order``,
    else the one artifact :func:`choose_backend` picks.  Entries the package lacks are left out."""
    entries = list(requested or config.load_entries) or [choose_backend(config, package)]
    for backend, fmt in entries:
        if backend not in BACKEND_FORMATS:
            raise FailedPrecondition(f"load order: unknown backend {backend!r} "
                                     f"(choose from {', '.join(BACKEND_FORMATS)})")
        if fmt not in BACKEND_FORMATS[backend]:
            raise FailedPrecondition(f"load order: backend {backend} cannot load {fmt!r} "
                                     f"(it loads {', '.join(BACKEND_FORMATS[backend])})")
    usable = [(b, f) for b, f in dict.fromkeys(entries) if f in package.artifacts]
    if not usable:
        raise FailedPrecondition(f"model {package.key} has none of the artifacts in the load order "
                                 f"({', '.join(f'{b}:{f}' for b, f in entries)}); it has "
                                 f"{', '.join(sorted(package.artifacts))}")
    return usable
