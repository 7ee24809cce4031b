"""Finding the model package to serve, choosing the backends and artifact formats to load it
with, the CPU layout (workers × threads) of a backend, and the malloc arenas the process runs with."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from stylecast.backends.base import (BackendUnavailable, auto_choice, backend_formats, backend_names,
                                     best_available)
from stylecast.backends.package import ModelPackage, PackageMisplaced, PackageNotFound, locate_package
from stylecast.model import BUILTIN_DIR, BUILTIN_MODEL
from stylecast.server.config import ServerConfig
from stylecast.server.errors import FailedPrecondition


def model_name(models_dir: str | Path, name: str) -> str:
    """The model to serve: ``name``; when it is empty, the real-time tier (:data:`~stylecast.model.BUILTIN_MODEL`)
    of the built-in models (``models_dir`` empty or the built-in folder), else "" (the folder's only model)."""
    if name or (models_dir and Path(models_dir).resolve() != BUILTIN_DIR.resolve()):
        return name
    return BUILTIN_MODEL


def find_package(models_dir: str | Path, name: str = "", version: str = "",
                 also: Sequence[Path] = ()) -> ModelPackage:
    """:func:`locate_package` in ``models_dir`` (the built-in models when empty) of model
    :func:`model_name`; a package that is not there, or whose folder disagrees with its manifest,
    is the caller's precondition: raises :class:`FailedPrecondition`."""
    try:
        return locate_package(Path(models_dir) if models_dir else BUILTIN_DIR, model_name(models_dir, name),
                              version, also)
    except (PackageNotFound, PackageMisplaced) as exc:
        raise FailedPrecondition(str(exc)) from None


def layout(config: ServerConfig, backend: str) -> tuple[int, int]:
    """(workers, threads per worker) for ``backend``; a 0 in the config is chosen here, as
    ``make bench`` measured best on CPUs: LiteRT runs one single-threaded interpreter per
    core (parallel interpreters beat one multi-threaded one), the other backends one session
    over every core (TensorFlow's shared thread pools lose with parallel calls)."""
    cpus = os.cpu_count() or 1
    workers = config.workers or (max(1, cpus // (config.threads or 1)) if backend == "litert" else 1)
    return workers, config.threads or max(1, cpus // workers)


def malloc_arenas(config: ServerConfig) -> int:
    """glibc malloc arenas for the server process (0 = glibc's default, 8 per core):
    ``config.malloc_arenas`` when set, else (0, auto) one arena when every backend the config
    loads is LiteRT (``backend = "auto"``: when LiteRT is the first of :data:`~stylecast.backends.base.AUTO_ORDER` that can
    run here; ``make bench-memory``: 20–30 MB less at 512², same CPU per frame), glibc's default
    otherwise (TensorFlow's threads contend for one arena: +7 % CPU per frame, ``make bench-threads``)."""
    if config.malloc_arenas:
        return config.malloc_arenas
    backends = {b for b, _ in config.load_entries} or {config.backend}
    if "auto" in backends:
        backends = (backends - {"auto"}) | {auto_choice((config.format,) if config.format else ())[0] or "auto"}
    return 1 if backends == {"litert"} else 0


def choose_backend(config: ServerConfig, package: ModelPackage) -> tuple[str, str]:
    """(backend name, artifact format) for this config and package; ``auto`` prefers a GPU
    (:func:`~stylecast.backends.base.best_available`: the first that runs here and loads the package)."""
    name = config.backend
    if name == "auto":
        try:
            name = best_available((config.format,) if config.format else tuple(package.artifacts))
        except BackendUnavailable as exc:
            raise FailedPrecondition(str(exc)) from None
    formats = backend_formats(name)
    if not formats:
        raise FailedPrecondition(f"unknown backend {name!r}; choose auto or one of {', '.join(backend_names())}")
    if config.format:
        if config.format not in formats:
            raise FailedPrecondition(f"backend {name} cannot load format {config.format!r} "
                                     f"(it loads {', '.join(formats)})")
        return name, config.format
    for fmt in formats:
        if fmt in package.artifacts:
            return name, fmt
    raise FailedPrecondition(f"model {package.key} has no artifact backend {name} can load "
                             f"(needs one of {', '.join(formats)})")


def load_order(config: ServerConfig, package: ModelPackage,
               requested: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """(backend, format) pairs to load, first first: ``requested``, else ``config.load_order``,
    else the one artifact :func:`choose_backend` picks.  Entries the package lacks are left out."""
    entries = list(requested or config.load_entries) or [choose_backend(config, package)]
    for backend, fmt in entries:
        formats = backend_formats(backend)
        if not formats:
            raise FailedPrecondition(f"load order: unknown backend {backend!r} "
                                     f"(choose from {', '.join(backend_names())})")
        if fmt not in formats:
            raise FailedPrecondition(f"load order: backend {backend} cannot load {fmt!r} "
                                     f"(it loads {', '.join(formats)})")
    usable = [(b, f) for b, f in dict.fromkeys(entries) if f in package.artifacts]
    if not usable:
        raise FailedPrecondition(f"model {package.key} has none of the artifacts in the load order "
                                 f"({', '.join(f'{b}:{f}' for b, f in entries)}); it has "
                                 f"{', '.join(sorted(package.artifacts))}")
    return usable
