"""Choosing the style store by URL: ``sqlite:///PATH`` (one process) or ``redis://`` / ``rediss://`` (replicas)."""

from __future__ import annotations

from pathlib import Path

SQLITE = "sqlite:///"
REDIS_SCHEMES = ("redis://", "rediss://")


def default_style_store(home: Path) -> str:
    return f"{SQLITE}{home / '.stylecast' / 'styles.db'}"


def check_style_store(url: str) -> str:
    """``url`` if it names a store this server can open; raises ValueError otherwise."""
    if url.startswith(REDIS_SCHEMES) or (url.startswith(SQLITE) and len(url) > len(SQLITE)):
        return url
    raise ValueError(f"style_store: expected sqlite:///PATH, redis://HOST:PORT/DB or rediss://…, got {url!r}")


def open_style_store(url: str, redis_password: str = ""):
    """The store ``url`` names (not yet opened): SQLite for ``sqlite:///PATH`` (``sqlite:////abs``
    or ``sqlite:///rel``), Redis for ``redis://`` and ``rediss://`` (the password from the URL,
    else ``redis_password``: the ``redis_password`` setting, i.e. ``STYLECAST_REDIS_PASSWORD``)."""
    check_style_store(url)
    if url.startswith(REDIS_SCHEMES):
        from stylecast.server.redis_store import RedisStyleStore

        return RedisStyleStore(url, redis_password)
    from stylecast.server.styles import StyleLibrary

    return StyleLibrary(url[len(SQLITE):])
