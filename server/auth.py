"""Bearer tokens with roles, checked for every RPC in one server interceptor.

A call carries ``authorization: Bearer <token>`` metadata.  The server holds only the
sha256 of each token, read from a TOML tokens file::

    [[tokens]]
    name = "camera-1"                  # [A-Za-z0-9][A-Za-z0-9._-]{0,63}; the metrics label
    roles = ["stylize"]                # stylize | styles | admin
    sha256 = "<64 hex digits>"         # sha256 of the token's UTF-8 bytes
    max_streams = 4                    # optional: concurrent Stylize streams of this token
    max_calls = 16                     # optional: concurrent other calls of this token

Every method of every served service needs one role (:data:`METHOD_ROLES`); health and
reflection are open; :class:`~stylecast.server.interceptors.AuthInterceptor` applies it.
No token or an unknown one → UNAUTHENTICATED, a known token without
the role → PERMISSION_DENIED; neither answer tells which tokens exist.  A presented token is
hashed once and compared with every stored digest in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stylecast.server.config import ConfigError
from stylecast.v1 import model_admin_pb2 as apb
from stylecast.v1 import stylecast_pb2 as pb

log = logging.getLogger(__name__)

ROLES = ("stylize", "styles", "admin")
ANONYMOUS = "anonymous"          # the token label of calls without a (valid) token
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                 "/grpc.reflection.v1.ServerReflection/")
_STYLE_TRANSFER = pb.DESCRIPTOR.services_by_name["StyleTransfer"]
_MODEL_ADMIN = apb.DESCRIPTOR.services_by_name["ModelAdmin"]
ANY_TOKEN = "any"    # a method every valid token may call, whatever its roles (GetLimits: the SDK asks first)
_ROLE_OF = {"Stylize": "stylize", "StylizeImage": "stylize", "GetStyle": "stylize", "ListStyles": "stylize",
            "SearchStyles": "stylize", "RegisterStyle": "styles", "DeleteStyle": "styles", "GetLimits": ANY_TOKEN}
# full method name -> the role it needs; a StyleTransfer method missing from _ROLE_OF fails at import
METHOD_ROLES: dict[str, str] = {
    **{f"/{_STYLE_TRANSFER.full_name}/{m.name}": _ROLE_OF[m.name] for m in _STYLE_TRANSFER.methods},
    **{f"/{_MODEL_ADMIN.full_name}/{m.name}": "admin" for m in _MODEL_ADMIN.methods},
}
STREAM_METHODS = frozenset({f"/{_STYLE_TRANSFER.full_name}/Stylize"})   # counted against max_streams


def token_digest(token: str) -> str:
    """The sha256 hex digest a tokens file stores for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token: 32 random bytes, URL-safe base64 (43 characters)
    after the ``sc_`` prefix, 46 in all."""
    return "sc_" + secrets.token_urlsafe(32)


def tokens_entry(name: str, roles: Sequence[str], token: str) -> str:
    """The TOML lines that add ``token`` (by its digest) to a tokens file."""
    check_roles(roles, "roles")
    if not NAME_RE.fullmatch(name) or name == ANONYMOUS:
        raise ValueError(f"token name {name!r}: use 1-64 of A-Z a-z 0-9 . _ - (starting with a letter "
                         f"or digit; {ANONYMOUS!r} is reserved)")
    role_list = ", ".join(f'"{r}"' for r in roles)
    return f'[[tokens]]\nname = "{name}"\nroles = [{role_list}]\nsha256 = "{token_digest(token)}"\n'


def check_roles(roles: Iterable[str], where: str) -> frozenset[str]:
    roles = frozenset(roles)
    unknown = roles - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"{where}: roles must be a non-empty subset of {', '.join(ROLES)}; "
                         f"got {', '.join(sorted(roles)) or 'none'}")
    return roles


@dataclass(frozen=True)
class TokenEntry:
    """One token of the tokens file (its digest, never the token)."""

    name: str
    roles: frozenset[str]
    digest: bytes                  # 32 bytes
    max_streams: int = 0           # 0 = only the server-wide limit
    max_calls: int = 0


def parse_tokens(text: str, source: str = "tokens file") -> tuple[TokenEntry, ...]:
    """Entries of a tokens file's TOML text; raises :class:`ConfigError` naming the bad entry."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    unknown_top = set(data) - {"tokens"}
    if unknown_top or not isinstance(data.get("tokens", []), list):
        raise ConfigError(f"{source}: expected only [[tokens]] tables")
    entries, names, digests = [], set(), set()
    for i, raw in enumerate(data.get("tokens", [])):
        where = f"{source}: [[tokens]] #{i + 1}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a table")
        extra = set(raw) - {"name", "roles", "sha256", "max_streams", "max_calls"}
        if extra:
            raise ConfigError(f"{where}: unknown keys {', '.join(sorted(extra))}")
        name, digest = raw.get("name"), raw.get("sha256")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name == ANONYMOUS:
            raise ConfigError(f"{where}: name must be 1-64 of A-Z a-z 0-9 . _ - (not {ANONYMOUS!r})")
        where = f"{source}: token {name!r}"
        if name in names:
            raise ConfigError(f"{where}: the name is used twice")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise ConfigError(f"{where}: sha256 must be 64 hex digits (stylecast token new prints it)")
        if digest.lower() in digests:
            raise ConfigError(f"{where}: the same token digest is listed twice")
        roles_raw = raw.get("roles")
        if not isinstance(roles_raw, list) or not all(isinstance(r, str) for r in roles_raw):
            raise ConfigError(f"{where}: roles must be a list of strings")
        try:
            roles = check_roles(roles_raw, where)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        limits = []
        for key in ("max_streams", "max_calls"):
            value = raw.get(key, 0)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1_000_000:
                raise ConfigError(f"{where}: {key} must be an integer 0..1000000 (0 = no per-token limit)")
            limits.append(value)
        names.add(name)
        digests.add(digest.lower())
        entries.append(TokenEntry(name, roles, bytes.fromhex(digest), *limits))
    return tuple(entries)


def read_tokens(path: str | Path) -> tuple[TokenEntry, ...]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"tokens file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"tokens file {path}: not UTF-8 text") from None
    return parse_tokens(text, f"tokens file {path}")


def bearer(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an ``authorization: Bearer …`` metadata entry, or None."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class Authenticator:
    """The tokens of a tokens file, re-read by :meth:`reload` (SIGHUP) without touching open calls."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._entries = read_tokens(self.path)
        self._last: tuple[object, object, TokenEntry | None] | None = None
        if not self._entries:
            log.warning("tokens file %s lists no tokens: every call except health and reflection is refused",
                        self.path)

    def reload(self) -> bool:
        """Re-read the tokens file; on an error keep the current tokens, log it and return False."""
        try:
            entries = read_tokens(self.path)
        except ConfigError as exc:
            log.error("tokens not reloaded, the previous ones stay in force: %s", exc)
            return False
        self._entries = entries
        log.info("tokens reloaded from %s: %d token(s)", self.path, len(entries))
        return True

    def identify(self, metadata) -> TokenEntry | None:
        """The entry of the call's bearer token, or None.  Every stored digest is compared, in
        constant time, so the time taken tells nothing about which digests exist."""
        entries = self._entries
        last = self._last
        if last is not None and last[0] is metadata and last[1] is entries:
            return last[2]  # the same call, asked by the metrics and then the auth interceptor
        token = bearer(metadata)
        found = None
        if token is not None:
            presented = hashlib.sha256(token.encode()).digest()
            for entry in entries:
                if hmac.compare_digest(presented, entry.digest):
                    found = entry
        self._last = (metadata, entries, found)
        return found

    def label(self, metadata) -> str:
        """The bounded ``token`` metrics label of a call: a token name, or ``anonymous``."""
        entry = self.identify(metadata)
        return entry.name if entry is not None else ANONYMOUS


def required_role(method: str) -> str | None:
    """The role a method needs; None for the open services (health, reflection).  A method of
    no known service needs ``admin`` (fails closed)."""
    if method.startswith(OPEN_PREFIXES):
        return None
    return METHOD_ROLES.get(method, "admin")


UNAUTHENTICATED_MESSAGE = ("missing or invalid bearer token: send metadata 'authorization: Bearer <token>' "
                           "(SDK: Client(target, token=...); CLI: --token or STYLECAST_TOKEN)")
