"""Model packages: ``NAME/VERSION/manifest.json`` plus chunk-verified artifacts.

A package holds one model (style predictor + transformer) in several formats.
Every artifact file is listed with its size, sha256 and the sha256 of each
1 MiB chunk; a package is usable only when every chunk verifies.  This module
has no TensorFlow dependency: the server, every backend and the model tooling import it.
A models folder holds packages as ``NAME/VERSION/manifest.json``; :func:`locate_package`
finds one there.

Manifest layout (``manifest.json``)::

    {"format_version": 1, "name": "builtin", "version": "1", "style_dim": 100,
     "artifacts": {
        "tflite-int8": {
            "files": [{"path": "tflite/int8.tflite", "size": 123, "sha256": "...",
                       "chunks": ["...", ...]}],
            "endpoints": {
                "predict_style": {"file": "tflite/int8.tflite", "signature": "predict_style",
                                  "inputs": {"image": "style_image"}, "output": "style_vector"},
                "stylize": {"file": "tflite/int8.tflite", "signature": "stylize",
                            "inputs": {"content": "content", "style": "style"},
                            "output": "stylized", "fixed_hw": null}}},
        "savedmodel": {"files": [...], "root": "savedmodel", "endpoints": {...}}}}

``endpoints`` tells a backend which file, signature (or, for signature-less
TFLite files, which tensor names) implement the two networks of the model
contract.  ``fixed_hw`` is set for files baked to one content size, which
backends feed by scaling.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

CHUNK_SIZE = 1 << 20
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"   # model names and versions: one path segment
NAME_RE = re.compile(NAME_PATTERN)
MAX_PATH_CHARS = 512                                 # a manifest path
MANIFEST = "manifest.json"
FORMATS = ("tflite-fp32", "tflite-fp16", "tflite-int8", "savedmodel", "onnx")
FORMAT_VERSION = 1


class PackageError(Exception):
    """A package is malformed, incomplete or fails verification."""


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str
    chunks: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256,
                "chunks": list(self.chunks)}


@dataclass(frozen=True)
class Artifact:
    format: str
    files: tuple[FileEntry, ...]
    endpoints: dict[str, dict[str, Any]]
    root: str | None = None  # directory artifacts (SavedModel): their root folder

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"files": [f.to_json() for f in self.files],
                               "endpoints": self.endpoints}
        if self.root is not None:
            out["root"] = self.root
        return out


@dataclass(frozen=True)
class ModelPackage:
    """A parsed, path-checked manifest rooted at ``path`` (``NAME/VERSION/``)."""

    path: Path
    name: str
    version: str
    style_dim: int
    artifacts: dict[str, Artifact]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"

    def artifact(self, fmt: str) -> Artifact:
        try:
            return self.artifacts[fmt]
        except KeyError:
            raise PackageError(
                f"model {self.key} has no {fmt!r} artifact (has: {', '.join(sorted(self.artifacts))})"
            ) from None

    def file_path(self, rel: str) -> Path:
        return self.path / safe_relpath(rel)

    def endpoint_path(self, fmt: str, endpoint: str) -> Path:
        art = self.artifact(fmt)
        rel = art.root if art.root is not None else art.endpoints[endpoint]["file"]
        return self.file_path(rel)

    def verify(self, formats: Iterable[str] | None = None,
               progress: Callable[[str, int, int], None] | None = None) -> None:
        """Check every chunk of the given formats (all by default).

        ``progress(format, done_bytes, total_bytes)`` is called after each chunk.
        Raises :class:`PackageError` naming the first bad file and chunk.
        """
        for fmt in formats if formats is not None else self.artifacts:
            art = self.artifact(fmt)
            total, done = art.size, 0
            for entry in art.files:
                for n in verify_file(self.file_path(entry.path), entry):
                    done += n
                    if progress:
                        progress(fmt, done, total)


def check_name(kind: str, value: object) -> str:
    """A model name or version: one path segment matching :data:`NAME_PATTERN`; raises PackageError."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        shown = repr(value)[:80] if isinstance(value, str) else type(value).__name__
        raise PackageError(f"model {kind} {shown} is not 1-64 of A-Z a-z 0-9 . _ - starting with a letter or digit")
    return value


def safe_relpath(rel: str) -> PurePosixPath:
    """A manifest path: relative, ``/``-separated, no ``.``/``..``/empty parts, no NUL or backslash,
    at most :data:`MAX_PATH_CHARS` characters; raises PackageError."""
    if not isinstance(rel, str) or not rel or len(rel) > MAX_PATH_CHARS or "\0" in rel or "\\" in rel:
        raise PackageError(f"unsafe path in manifest: {str(rel)[:80]!r} (relative, at most {MAX_PATH_CHARS} "
                           "characters, no NUL or backslash)")
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("", ".", "..") or len(part) > 255 for part in rel.split("/")):
        raise PackageError(f"unsafe path in manifest: {rel[:80]!r}")
    return p


def iter_chunks(path: Path, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            yield chunk


def hash_file(path: Path, rel: str) -> FileEntry:
    whole, chunks, size = hashlib.sha256(), [], 0
    for chunk in iter_chunks(path):
        whole.update(chunk)
        chunks.append(hashlib.sha256(chunk).hexdigest())
        size += len(chunk)
    return FileEntry(rel, size, whole.hexdigest(), tuple(chunks))


def chunk_count(size: int) -> int:
    """How many :data:`CHUNK_SIZE` chunks a file of ``size`` bytes has."""
    return -(-size // CHUNK_SIZE)


def chunk_span(entry: FileEntry, index: int) -> tuple[int, int]:
    """(offset, length) of chunk ``index`` of a file."""
    offset = index * CHUNK_SIZE
    return offset, min(CHUNK_SIZE, entry.size - offset)


def check_entry(entry: FileEntry) -> None:
    """Reject an entry whose chunk list cannot describe its size or whose hashes are not sha256 hex."""
    if len(entry.chunks) != chunk_count(entry.size):
        raise PackageError(f"{entry.path}: manifest lists {len(entry.chunks)} chunks, "
                           f"a size of {entry.size} bytes needs {chunk_count(entry.size)}")
    for digest in (entry.sha256, *entry.chunks):
        if len(digest) != 64 or digest.strip("0123456789abcdef"):
            raise PackageError(f"{entry.path}: {digest[:80]!r} is not a sha256 hex digest")


def verify_file(path: Path, entry: FileEntry) -> Iterator[int]:
    """Yield the byte count of each verified chunk; raise on the first mismatch."""
    if not path.is_file():
        raise PackageError(f"{entry.path}: missing")
    actual = path.stat().st_size
    if actual != entry.size:
        raise PackageError(f"{entry.path}: size {actual} != manifest {entry.size}")
    expected_chunks = max(1, -(-entry.size // CHUNK_SIZE)) if entry.size else 0
    if len(entry.chunks) != expected_chunks:
        raise PackageError(f"{entry.path}: manifest lists {len(entry.chunks)} chunks, size needs {expected_chunks}")
    whole = hashlib.sha256()
    for i, chunk in enumerate(iter_chunks(path)):
        whole.update(chunk)
        if hashlib.sha256(chunk).hexdigest() != entry.chunks[i]:
            raise PackageError(f"{entry.path}: chunk {i} sha256 mismatch (corrupt or truncated)")
        yield len(chunk)
    if whole.hexdigest() != entry.sha256:
        raise PackageError(f"{entry.path}: sha256 mismatch")


def parse_manifest(data: dict[str, Any], path: Path) -> ModelPackage:
    try:
        name, version, dim = str(data["name"]), str(data["version"]), int(data["style_dim"])
        arts = {}
        for fmt, spec in data["artifacts"].items():
            if fmt not in FORMATS:
                raise PackageError(f"unknown artifact format {fmt!r}")
            files = tuple(FileEntry(str(f["path"]), int(f["size"]), str(f["sha256"]),
                                    tuple(str(c) for c in f["chunks"])) for f in spec["files"])
            for f in files:
                safe_relpath(f.path)
                if f.size < 0:
                    raise PackageError(f"{f.path}: negative size")
            root = spec.get("root")
            if root is not None:
                safe_relpath(root)
            endpoints = dict(spec.get("endpoints", {}))
            for ep in endpoints.values():
                if "file" in ep:
                    safe_relpath(ep["file"])
            arts[fmt] = Artifact(fmt, files, endpoints, root)
    except PackageError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise PackageError(f"malformed manifest: {exc!r}"[:300]) from exc
    check_name("name", name)
    check_name("version", version)
    if not 1 <= dim <= 65536:
        raise PackageError(f"style_dim {dim} is outside 1..65536")
    extra = {k: v for k, v in data.items()
             if k not in ("format_version", "name", "version", "style_dim", "artifacts")}
    return ModelPackage(path, name, version, dim, arts, extra)


def load_package(path: str | os.PathLike[str]) -> ModelPackage:
    """Read ``path/manifest.json`` (no chunk verification; call ``verify``)."""
    path = Path(path)
    try:
        data = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise PackageError(f"{path}: no {MANIFEST}") from None
    except json.JSONDecodeError as exc:
        raise PackageError(f"{path}/{MANIFEST}: invalid JSON: {exc}") from exc
    return parse_manifest(data, path)


def write_manifest(path: Path, name: str, version: str, style_dim: int,
                   artifacts: dict[str, dict[str, Any]], **extra: Any) -> ModelPackage:
    """Hash the artifact files under ``path`` and write ``manifest.json``.

    ``artifacts`` maps a format to ``{"files": [rel, ...] | "root": reldir, "endpoints": {...}}``;
    a ``root`` folder contributes every file below it.
    """
    path = Path(path)
    out: dict[str, Any] = {}
    for fmt, spec in artifacts.items():
        rels = list(spec.get("files", []))
        if spec.get("root"):
            base = path / spec["root"]
            rels += sorted(p.relative_to(path).as_posix() for p in base.rglob("*") if p.is_file())
        entries = [hash_file(path / r, r) for r in rels]
        out[fmt] = Artifact(fmt, tuple(entries), spec.get("endpoints", {}), spec.get("root")).to_json()
    data = {"format_version": FORMAT_VERSION, "name": name, "version": version,
            "style_dim": style_dim, "artifacts": out, **extra}
    (path / MANIFEST).write_text(json.dumps(data, indent=1) + "\n")
    return parse_manifest(data, path)


class PackageNotFound(PackageError):
    """No package of the asked name or version in the searched folders."""


class PackageMisplaced(PackageError):
    """A package folder ``NAME/VERSION`` whose manifest names another model or version."""


def load_installed(folder: Path) -> ModelPackage:
    """The package in an installed folder ``.../NAME/VERSION``; raises :class:`PackageMisplaced`
    when its manifest's name or version differs from the folder's (a copied folder whose
    manifest.json was not edited: never served under the other number), :class:`PackageError`
    for a bad manifest."""
    package = load_package(folder)
    name, version = folder.parent.name, folder.name
    if (package.name, package.version) != (name, version):
        raise PackageMisplaced(
            f"{folder}/{MANIFEST} says {package.name}:{package.version}, but the folder is {name}/{version}; "
            f"edit manifest.json's name/version to {name}/{version} or rename the folder to "
            f"{package.name}/{package.version} (this folder is not served until then)")
    return package


def _version_key(version: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in version.replace("-", ".").split("."))


def _confined(root: Path, path: Path) -> bool:
    """A plainly named folder whose resolved path (symlinks followed) lies inside ``root``."""
    return bool(NAME_RE.fullmatch(path.name)) and path.is_dir() and path.resolve().is_relative_to(root.resolve())


def model_dirs(root: Path) -> dict[str, Path]:
    """Model name -> folder, for every ``root/NAME`` holding at least one ``VERSION/manifest.json``
    (folders that are not plain names, or resolve outside ``root``, are skipped)."""
    if not root.is_dir():
        return {}
    return {d.name: d for d in sorted(root.iterdir()) if _confined(root, d)
            and any((v / MANIFEST).is_file() and _confined(root, v) for v in d.iterdir())}


def version_dirs(roots: Sequence[Path], name: str) -> dict[str, Path]:
    """Version -> folder of model ``name`` over ``roots`` (an earlier root wins), oldest first;
    folders resolving outside their root are skipped."""
    found: dict[str, Path] = {}
    for root in roots:
        folder = root / name
        if _confined(root, folder):
            for v in folder.iterdir():
                if (v / MANIFEST).is_file() and _confined(root, v):
                    found.setdefault(v.name, v)
    return {v: found[v] for v in sorted(found, key=_version_key)}


def locate_package(root: str | os.PathLike[str], name: str = "", version: str = "",
                   also: Sequence[Path] = ()) -> ModelPackage:
    """The package ``root/NAME/VERSION``: the only model when ``name`` is empty, the latest
    version (by number) when ``version`` is empty.  ``also``: more roots searched for versions
    of that model.  Raises :class:`PackageNotFound` (:class:`PackageMisplaced` for a folder whose
    manifest names another version, :class:`PackageError` for a bad manifest)."""
    root = Path(root)
    if not root.is_dir():
        raise PackageNotFound(f"models folder {root} does not exist (or is not a folder); point --models-dir "
                              f"(STYLECAST_MODELS_DIR) at a folder holding NAME/VERSION/{MANIFEST}")
    models = sorted(model_dirs(root))
    if not name:
        if len(models) != 1:
            found = ", ".join(models) or "none"
            raise PackageNotFound(f"{root}: expected exactly one model package (NAME/VERSION/{MANIFEST}), "
                                  f"found {found}; choose one with --model")
        name = models[0]
    versions = version_dirs([root, *also], name)
    if not versions:
        raise PackageNotFound(f"model {name!r} not found in {root} (have: {', '.join(models) or 'none'})")
    if version and version not in versions:
        raise PackageNotFound(f"model {name} has no version {version!r} (have: {', '.join(versions)})")
    return load_installed(versions[version or list(versions)[-1]])
