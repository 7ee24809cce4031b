"""The model registry: packages on disk (models folder + uploads) and the live state of
every artifact, for ListModels and WatchModel.

States change on the event loop only (the loader posts progress from its thread);
watchers wake on every change.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

from stylecast.backends.package import (ModelPackage, PackageError, PackageMisplaced, load_installed, load_package,
                                        model_dirs, version_dirs)
from stylecast.model import BUILTIN_DIR
from stylecast.server.config import ServerConfig
from stylecast.server.packages import find_package, model_name
from stylecast.server.paths import inside, model_key
from stylecast.server.uploads import Upload, UploadStore

log = logging.getLogger(__name__)

# artifact states, as in the proto's ArtifactState
AVAILABLE, QUEUED, VERIFYING, LOADING, WARMING, ACTIVE, FAILED = (
    "available", "queued", "verifying", "loading", "warming", "active", "failed")
IN_PROGRESS = frozenset((QUEUED, VERIFYING, LOADING, WARMING))


@dataclass(frozen=True)
class ArtifactStatus:
    format: str
    bytes: int
    backend: str = ""
    state: str = AVAILABLE
    done_bytes: int = 0
    error: str = ""
    load_seconds: float = 0.0


@dataclass(frozen=True)
class UploadProgress:
    total_chunks: int
    received_chunks: int
    total_bytes: int
    received_bytes: int
    missing: tuple[tuple[str, int], ...] = ()
    complete: bool = False
    already_installed: bool = False  # an identical package was installed before this upload

    @classmethod
    def of(cls, upload: Upload, with_missing: bool = False) -> UploadProgress:
        missing = tuple(sorted(upload.missing)) if with_missing else ()
        return cls(upload.total_chunks, upload.total_chunks - len(upload.missing), upload.total_bytes,
                   upload.received_bytes, missing, upload.complete, upload.already_installed)


@dataclass(frozen=True)
class ModelStatus:
    name: str
    version: str
    uploaded: bool
    artifacts: tuple[ArtifactStatus, ...]
    upload: UploadProgress | None = None   # an incomplete upload
    swaps: int = 0

    @property
    def bytes(self) -> int:
        return sum(a.bytes for a in self.artifacts)

    @property
    def state(self) -> str:
        """uploading | available | loading | active | failed."""
        states = {a.state for a in self.artifacts}
        if self.upload is not None:
            return "uploading"
        if ACTIVE in states:
            return ACTIVE
        if states & IN_PROGRESS:
            return "loading"
        return FAILED if FAILED in states else AVAILABLE

    @property
    def loading(self) -> bool:
        return any(a.state in IN_PROGRESS for a in self.artifacts)


class ModelRegistry:
    """Packages under the models folder (read-only) and the upload folder, and their live state."""

    def __init__(self, config: ServerConfig) -> None:
        self.models_root = Path(config.models_dir) if config.models_dir else BUILTIN_DIR
        self.uploads = UploadStore(config.upload_root, config.max_upload_bytes)
        self._live: dict[tuple[str, str], dict[str, ArtifactStatus]] = {}
        self._swaps: Counter[tuple[str, str]] = Counter()
        self._changed = asyncio.Event()
        self._warned: set[Path] = set()  # misplaced folders already logged

    @property
    def roots(self) -> tuple[Path, Path]:
        return self.models_root, self.uploads.root

    # ------------------------------------------------------------ discovery

    def confine(self, name: str, version: str = "") -> None:
        """Refuse (InvalidArgument) a name or version that is not one plain segment, or whose folder
        in either root resolves (through a symlink) outside that root."""
        model_key(name, version, version_optional=True)
        for root in self.roots:
            for folder in (root / name, root / name / version) if version else (root / name,):
                if folder.exists() or folder.is_symlink():
                    inside(root, folder)

    def find(self, name: str = "", version: str = "") -> ModelPackage:
        """A package: ``name`` "" = the only model of the models folder (of the built-in folder, its
        real-time tier: :func:`~stylecast.server.packages.model_name`), ``version`` "" = the latest.
        Raises :class:`~stylecast.server.errors.FailedPrecondition` when it is not installed (or ``name`` is "" and the
        models folder holds no or several models), :class:`InvalidArgument` for a bad name or version."""
        name = model_name(self.models_root, name)
        if not name and version:
            models = sorted(model_dirs(self.models_root))
            if len(models) != 1:
                find_package(self.models_root)  # raises: no such folder, or no or several models
            name = models[0]
        if name:
            self.confine(name, version)
        return find_package(self.models_root, name, version, also=[self.uploads.root])

    def installed(self, name: str, version: str) -> Path | None:
        """The folder of an installed package of that name and version (either root), or None."""
        self.confine(name, version)
        return version_dirs(self.roots, name).get(version)

    def versions(self, name: str) -> list[str]:
        """Installed versions of model ``name`` (either root), oldest first (synchronous file reads)."""
        self.confine(name)
        return list(version_dirs(self.roots, name))

    def is_uploaded(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self.uploads.root.resolve())

    def _packages(self) -> list[ModelPackage | ModelStatus]:
        """Every installed package; a folder whose manifest names another version is a failed
        status under the folder's name and version (logged once per folder: it is never served)."""
        names = sorted(set(model_dirs(self.models_root)) | set(model_dirs(self.uploads.root)))
        out: list[ModelPackage | ModelStatus] = []
        for name in names:
            for version, folder in version_dirs(self.roots, name).items():
                try:
                    out.append(load_installed(folder))
                except PackageMisplaced as exc:
                    if folder not in self._warned:
                        self._warned.add(folder)
                        log.warning("%s", exc)
                    package = load_package(folder)
                    arts = tuple(ArtifactStatus(fmt, art.size, state=FAILED, error=str(exc))
                                 for fmt, art in package.artifacts.items())
                    out.append(ModelStatus(name, version, self.is_uploaded(folder), arts))
                except PackageError:
                    continue  # a broken manifest on disk: not listable, not loadable
        return out

    def statuses(self, name: str = "") -> list[ModelStatus]:
        """Every package on disk and every interrupted upload (synchronous file reads: call from a thread)."""
        out = []
        for package in self._packages():
            if not name or package.name == name:
                out.append(package if isinstance(package, ModelStatus) else self.status(package))
        for upload in self.uploads.partials():
            if (not name or upload.package.name == name) and self.installed(*upload.key) is None:
                arts = tuple(ArtifactStatus(fmt, a.size) for fmt, a in upload.package.artifacts.items())
                out.append(ModelStatus(*upload.key, True, arts, UploadProgress.of(upload)))
        return out

    def status(self, package: ModelPackage) -> ModelStatus:
        """One package's status: its artifacts' live state and its swap count."""
        live = self._live.get((package.name, package.version), {})
        arts = tuple(live.get(fmt) or ArtifactStatus(fmt, art.size) for fmt, art in package.artifacts.items())
        return ModelStatus(package.name, package.version, self.is_uploaded(package.path), arts,
                           swaps=self._swaps[(package.name, package.version)])

    # ------------------------------------------------------------ live state

    def set(self, package: ModelPackage, fmt: str, **changes) -> None:
        """Change one artifact's state (event loop only) and wake the watchers."""
        live = self._live.setdefault((package.name, package.version), {})
        current = live.get(fmt) or ArtifactStatus(fmt, package.artifact(fmt).size)
        live[fmt] = replace(current, **changes)
        self._notify()

    def swapped(self, package: ModelPackage) -> None:
        self._swaps[(package.name, package.version)] += 1
        self._notify()

    def forget(self, name: str, version: str) -> None:
        self._live.pop((name, version), None)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def watch(self, package: ModelPackage) -> AsyncIterator[ModelStatus]:
        """The package's status now and after every change, until nothing of it is loading."""
        while True:
            changed = self._changed
            status = self.status(package)
            yield status
            if not status.loading:
                return
            await changed.wait()

