"""Resumable, chunk-verified model uploads into the upload folder.

An upload lives in ``ROOT/.uploads/NAME/VERSION/`` (its manifest plus files written
chunk by chunk at their offsets) until every chunk and every whole file verifies;
then the folder is renamed to ``ROOT/NAME/VERSION/`` in one step, so a package is
never visible half-written.  Which chunks an interrupted upload already holds is
read back from the files themselves (a chunk counts when its bytes hash right), so
no separate state can go stale and a torn write is simply asked for again.

The methods are synchronous file work: call them from a thread.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stylecast.backends.package import (MANIFEST, FileEntry, ModelPackage, PackageError, check_entry, chunk_span,
                                     load_package, parse_manifest, verify_file)
from stylecast.server.errors import (Aborted, AlreadyExists, DataLoss, FailedPrecondition, InvalidArgument,
                                     ResourceExhausted)
from stylecast.server.paths import inside, model_key

PARTIAL = ".uploads"


@dataclass
class Upload:
    """One upload in progress: its manifest and the chunks still missing."""

    package: ModelPackage                     # rooted at the partial folder
    files: dict[str, FileEntry]
    missing: set[tuple[str, int]] = field(default_factory=set)
    complete: bool = False                    # an installed, verified package
    already_installed: bool = False           # installed (identical manifest) before this upload began

    @property
    def key(self) -> tuple[str, str]:
        return self.package.name, self.package.version

    @property
    def total_chunks(self) -> int:
        return sum(len(f.chunks) for f in self.files.values())

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files.values())

    @property
    def received_bytes(self) -> int:
        return self.total_bytes - sum(chunk_span(self.files[p], i)[1] for p, i in self.missing)


class UploadStore:
    """Uploads into ``root`` (packages of at most ``max_bytes``)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root, self.max_bytes = root, max_bytes
        self._active: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def partial_dir(self, name: str, version: str) -> Path:
        """Where an upload of ``name``/``version`` lives; InvalidArgument for a name or version that
        is not one plain segment, or a folder resolving outside the upload root."""
        model_key(name, version)
        folder = self.root / PARTIAL / name / version
        for path in (folder.parent, folder):
            if path.exists() or path.is_symlink():
                inside(self.root, path)
        return folder

    def begin(self, manifest: bytes, installed: Callable[[str, str], Path | None]) -> Upload:
        """Check a manifest and return the upload with the chunks still missing; call
        :meth:`release` when the upload's call ends.

        ``installed(name, version)``: the folder of an existing package, if any; the same
        manifest then reports the upload complete, a different one is refused.
        """
        try:
            data = json.loads(manifest)
            package = parse_manifest(data, self.root)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"the first UploadModel message must be a manifest.json: {exc}") from None
        except RecursionError:
            raise InvalidArgument("manifest rejected: nested too deeply") from None
        except PackageError as exc:
            raise InvalidArgument(f"manifest rejected: {exc}") from None
        files: dict[str, FileEntry] = {}
        for art in package.artifacts.values():
            for entry in art.files:
                try:
                    check_entry(entry)
                except PackageError as exc:
                    raise InvalidArgument(f"manifest rejected: {exc}") from None
                if files.setdefault(entry.path, entry) != entry:
                    raise InvalidArgument(f"manifest rejected: {entry.path} is listed twice with different contents")
        paths = set(files)
        for p in paths:  # a file may not also be a folder of another file
            parts = p.split("/")
            if any("/".join(parts[:i]) in paths for i in range(1, len(parts))) or p == MANIFEST:
                raise InvalidArgument(f"manifest rejected: path {p!r} collides with another file")
        size = sum(f.size for f in files.values())
        if size > self.max_bytes:
            raise ResourceExhausted(f"package {package.key} is {size} bytes; this server takes at most "
                                    f"{self.max_bytes} (max_upload_bytes)")
        existing = installed(package.name, package.version)
        if existing is not None:
            if json.loads((existing / MANIFEST).read_text()) != data:
                raise AlreadyExists(f"model {package.key} is already installed with a different manifest; "
                                    "upload this package under a new version (edit manifest.json's version "
                                    "and rename its folder to match), or first remove the installed one "
                                    f"(stylecast models unload {package.name} {package.version} --delete)")
            return Upload(load_package(existing), files, complete=True, already_installed=True)
        key = (package.name, package.version)
        with self._lock:
            if key in self._active:
                raise Aborted(f"model {package.key} is being uploaded by another call; retry when it ends")
            self._active.add(key)
        try:
            return self._resume(package, files, data, manifest)
        except BaseException:
            self.release(key)
            raise

    def release(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._active.discard(key)

    def _resume(self, package: ModelPackage, files: dict[str, FileEntry], data: dict, manifest: bytes) -> Upload:
        folder = self.partial_dir(package.name, package.version)
        if folder.is_dir():
            try:
                same = json.loads((folder / MANIFEST).read_text()) == data
            except (OSError, json.JSONDecodeError):
                same = False
            if not same:  # a different package under the same name and version: start over
                shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MANIFEST).write_bytes(manifest)
        upload = Upload(parse_manifest(data, folder), files)
        upload.missing = {(p, i) for p, entry in files.items() for i in range(len(entry.chunks))
                          if not _holds(folder / p, entry, i)}
        return upload

    def put(self, upload: Upload, path: str, index: int, data: bytes) -> None:
        """Verify one chunk against the manifest and write it at its offset; a chunk of a package
        already installed (``upload.complete``) is not written: its verified files stay as they are.
        Raises InvalidArgument (not in the manifest), DataLoss (truncated or corrupt) or
        ResourceExhausted (the server's disk is full)."""
        if upload.complete:
            return
        entry = upload.files.get(path)
        if entry is None:
            raise InvalidArgument(f"chunk for {path!r}, which the manifest does not list")
        if not 0 <= index < len(entry.chunks):
            raise InvalidArgument(f"{path}: chunk {index} out of range (the file has {len(entry.chunks)})")
        offset, length = chunk_span(entry, index)
        if len(data) != length:
            raise DataLoss(f"{path}: chunk {index} has {len(data)} bytes, the manifest needs {length} "
                           "(truncated); send it again")
        if hashlib.sha256(data).hexdigest() != entry.chunks[index]:
            raise DataLoss(f"{path}: chunk {index} sha256 mismatch (corrupt); send it again")
        target = upload.package.path / path
        inside(upload.package.path, target)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "r+b" if target.exists() else "wb") as f:
                f.seek(offset)
                f.write(data)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ResourceExhausted(f"no disk space on the server for {path}; the chunks received so far are "
                                        "kept: send the manifest again to resume once space is freed",
                                        subject="disk") from None
            raise  # the server's own fault: INTERNAL, logged with its traceback
        upload.missing.discard((path, index))

    def finish(self, upload: Upload) -> ModelPackage:
        """Verify every whole file, then install the package; the partial upload is removed if it lies."""
        if upload.complete:
            return upload.package
        if upload.missing:
            raise FailedPrecondition(f"upload of {upload.package.key} is incomplete: {len(upload.missing)} of "
                                     f"{upload.total_chunks} chunks missing; send the manifest again to resume")
        folder = upload.package.path
        try:
            for path, entry in upload.files.items():
                (folder / path).parent.mkdir(parents=True, exist_ok=True)
                with open(folder / path, "ab") as f:  # creates empty files, drops bytes past the end
                    f.truncate(entry.size)
                for _ in verify_file(folder / path, entry):
                    pass
        except PackageError as exc:
            shutil.rmtree(folder)
            raise DataLoss(f"upload of {upload.package.key} discarded: {exc} — the manifest does not match "
                           "its own chunks") from None
        final = self.root / upload.package.name / upload.package.version
        if final.parent.exists():
            inside(self.root, final.parent)
        if final.exists():
            raise AlreadyExists(f"model {upload.package.key} was installed meanwhile")
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(folder, final)
        upload.complete = True
        return load_package(final)

    def partials(self) -> list[Upload]:
        """Interrupted uploads on disk, with what each still misses."""
        out = []
        base = self.root / PARTIAL
        for manifest in sorted(base.glob(f"*/*/{MANIFEST}")) if base.is_dir() else []:
            try:
                package = load_package(manifest.parent)
            except PackageError:
                continue
            files = {f.path: f for art in package.artifacts.values() for f in art.files}
            upload = Upload(package, files)
            upload.missing = {(p, i) for p, e in files.items() for i in range(len(e.chunks))
                              if not _holds(manifest.parent / p, e, i)}
            out.append(upload)
        return out

    def delete(self, name: str, version: str) -> bool:
        """Remove an uploaded package or an interrupted upload; False when neither exists."""
        with self._lock:
            if (name, version) in self._active:
                raise Aborted(f"model {name}:{version} is being uploaded; delete it when the upload ends")
        deleted = False
        for folder in (self.root / name / version, self.partial_dir(name, version)):
            for path in (folder.parent, folder):
                if path.exists() or path.is_symlink():
                    inside(self.root, path)   # never follow a symlink out of the upload root
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder)
                deleted = True
        return deleted


def _holds(path: Path, entry: FileEntry, index: int) -> bool:
    offset, length = chunk_span(entry, index)
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
    except OSError:
        return False
    return len(data) == length and hashlib.sha256(data).hexdigest() == entry.chunks[index]
