"""Confining client-named paths: model names and versions are single segments, and every path
the server reads, writes or deletes for a client resolves (symlinks included) inside its root."""

from __future__ import annotations

from pathlib import Path

from stylecast.backends.package import PackageError, check_name
from stylecast.server.errors import InvalidArgument


def model_key(name: str, version: str, *, version_optional: bool = False) -> tuple[str, str]:
    """Check a client's model ``name`` and ``version`` (``[A-Za-z0-9][A-Za-z0-9._-]{0,63}``);
    raises :class:`InvalidArgument`.  An empty version passes when ``version_optional``."""
    try:
        check_name("name", name)
        if version or not version_optional:
            check_name("version", version)
    except PackageError as exc:
        raise InvalidArgument(str(exc)) from None
    return name, version


def inside(root: Path, path: Path) -> Path:
    """``path`` resolved (symlinks followed); raises :class:`InvalidArgument` unless it lies inside
    ``root`` (itself resolved)."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise InvalidArgument(f"{path.name!r} resolves outside the model folder {root}; refused")
    return resolved
