"""Typed client exceptions, one per gRPC status code, mapped in one place.

Every failure the SDK reports is a :class:`StylecastError`; its subclass says
which status the server answered (or which the transport produced), so callers
can ``except NotFound`` instead of inspecting codes.  Per-frame errors that a
stream reports in-band use the same classes.  The server's ``google.rpc`` error details
(``grpc-status-details-bin``) are read into fields: ``reason`` (``ErrorInfo``) and
``retry_after_s`` (``RetryInfo``: when a retry can succeed).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"


class StylecastError(Exception):
    """Base of every SDK error; ``code`` is the gRPC status, ``details`` the server's message,
    ``reason`` its ``ErrorInfo`` reason ("" if none), ``retry_after_s`` its ``RetryInfo`` delay
    in seconds (None: the server gave no retry advice)."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str = "", code: grpc.StatusCode | None = None, *, reason: str = "",
                 retry_after_s: float | None = None) -> None:
        if code is not None:
            self.code = code
        self.details, self.reason, self.retry_after_s = details, reason, retry_after_s
        super().__init__(f"{self.code.name}: {details}" if details else self.code.name)


class Cancelled(StylecastError):
    code = grpc.StatusCode.CANCELLED


class InvalidArgument(StylecastError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(StylecastError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(StylecastError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(StylecastError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(StylecastError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(StylecastError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(StylecastError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(StylecastError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(StylecastError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(StylecastError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(StylecastError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(StylecastError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(StylecastError):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(StylecastError):
    code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: dict[grpc.StatusCode, type[StylecastError]] = {
    cls.code: cls for cls in StylecastError.__subclasses__()
}
# google.rpc.Code integers (as carried by in-band FrameError) -> grpc.StatusCode
_BY_NUMBER: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


def error_for(code: grpc.StatusCode | int, details: str = "", trailing_metadata: Iterable[Any] | None = None
              ) -> StylecastError:
    """The typed exception for a status code (a ``grpc.StatusCode`` or its integer value), with
    the rich error details found in the call's ``trailing_metadata`` (if given)."""
    if isinstance(code, int):
        code = _BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    rich = rich_details(trailing_metadata)
    cls = _BY_CODE.get(code)
    return cls(details, **rich) if cls is not None else StylecastError(details, code, **rich)


def rich_details(trailing_metadata: Iterable[Any] | None) -> dict[str, Any]:
    """``reason`` (ErrorInfo) and ``retry_after_s`` (RetryInfo) from a call's trailing metadata
    (``(key, value)`` pairs); those absent are left out."""
    out: dict[str, Any] = {}
    for key, value in trailing_metadata or ():
        if key != DETAILS_KEY:
            continue
        for detail in status_pb2.Status.FromString(value).details:
            info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                out["reason"] = info.reason
            elif detail.Unpack(retry):
                out["retry_after_s"] = retry.retry_delay.ToMilliseconds() / 1000
    return out


def from_rpc_error(exc: grpc.RpcError) -> StylecastError:
    """Translate an RPC failure (sync or aio) into its typed exception."""
    code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
    details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    trailing = exc.trailing_metadata() if callable(getattr(exc, "trailing_metadata", None)) else None
    return error_for(code or grpc.StatusCode.UNKNOWN, details or "", trailing)
