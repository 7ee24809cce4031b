"""The server's one exception hierarchy and the one mapping from errors to gRPC status.

:func:`to_status` gives (code, message) — what an in-band ``FrameError`` carries — and
:func:`rich_status` the full status a call ends with: the code, the message and
``google.rpc`` details a client reads as fields (``ErrorInfo`` with a reason, ``RetryInfo``
when retrying later can succeed, ``QuotaFailure`` for a limit).  The server's
:class:`~stylecast.server.interceptors.ErrorInterceptor` applies it to every method.
"""

from __future__ import annotations

import logging
import re

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from stylecast.backends.base import BackendError
from stylecast.backends.package import PackageError

log = logging.getLogger(__name__)
DOMAIN = "stylecast.dev"


class StylecastError(Exception):
    """Base of every error the server reports on purpose; ``code`` is its gRPC status,
    ``retry_after_s`` (seconds, or None) tells the client when a retry can succeed."""

    code = grpc.StatusCode.INTERNAL
    retry_after_s: float | None = None

    def __init__(self, message: str = "", *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s

    @property
    def reason(self) -> str:
        """``ErrorInfo.reason``: the class name in UPPER_SNAKE_CASE (e.g. ``SHUTTING_DOWN``)."""
        if type(self) is StylecastError:
            return self.code.name
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).upper()

    def details(self) -> list[Message]:
        """The ``google.rpc`` error details of this error."""
        out: list[Message] = [error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN)]
        if self.retry_after_s is not None:
            delay = duration_pb2.Duration()
            delay.FromMilliseconds(round(self.retry_after_s * 1000))
            out.append(error_details_pb2.RetryInfo(retry_delay=delay))
        return out


class InvalidArgument(StylecastError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class InvalidSplit(InvalidArgument):
    """A traffic split naming a version that is not installed, or weights that are not whole
    percentages summing to 100."""


class NotFound(StylecastError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(StylecastError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Aborted(StylecastError):
    code = grpc.StatusCode.ABORTED


class DataLoss(StylecastError):
    code = grpc.StatusCode.DATA_LOSS


class ResourceExhausted(StylecastError):
    """A limit was reached; ``subject`` names it for ``QuotaFailure`` ("" = none)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str = "", *, subject: str = "", retry_after_s: float | None = None) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.subject = subject

    def details(self) -> list[Message]:
        out = super().details()
        if self.subject:
            out.append(error_details_pb2.QuotaFailure(violations=[
                error_details_pb2.QuotaFailure.Violation(subject=self.subject, description=str(self))]))
        return out


class FailedPrecondition(StylecastError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(StylecastError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(StylecastError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Stalled(StylecastError):
    """A stream's answers could not be sent for ``stall_timeout_s``: the client stopped reading."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(StylecastError):
    code = grpc.StatusCode.UNAVAILABLE


class StoreUnavailable(Unavailable):
    """The style store (shared by every replica) cannot be reached.  Another replica would fail
    alike, so besides ``RetryInfo`` the status carries gRPC's retry pushback
    (``grpc-retry-pushback-ms``): clients' retry policies wait ``retry_after_s`` before retrying."""

    retry_after_s = 1.0


class ShuttingDown(Unavailable):
    retry_after_s = 1.0

    def __init__(self) -> None:
        super().__init__("server shutting down; retry on another replica or after restart")


def answer_too_large(size: int, limit: int) -> str:
    """The message for an answer of ``size`` bytes over the ``limit`` (max_message_bytes)."""
    return (f"the answer is {size / (1 << 20):.1f} MiB, over the {limit / (1 << 20):.1f} MiB a message may carry "
            "(max_message_bytes): ask for JPEG or PNG output or a smaller output size")


def _classify(exc: BaseException) -> StylecastError:
    if isinstance(exc, StylecastError):
        return exc
    if isinstance(exc, PackageError):
        return FailedPrecondition(f"model package: {exc}")
    if isinstance(exc, BackendError):
        log.error("backend failure", exc_info=exc)
        return StylecastError(f"inference failed: {exc}")
    log.error("unhandled server error", exc_info=exc)
    return StylecastError("internal server error (logged on the server)")


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Map any exception to ``(status code, message)``; unknown ones are logged as INTERNAL."""
    err = _classify(exc)
    return err.code, str(err)


def rich_status(exc: BaseException) -> grpc.Status:
    """The status a call fails with: :func:`to_status` plus the error's ``google.rpc`` details
    (in the ``grpc-status-details-bin`` trailer)."""
    err = _classify(exc)
    status = status_pb2.Status(code=code_number(err.code), message=str(err))
    for detail in err.details():
        status.details.add().Pack(detail)
    out = rpc_status.to_status(status)
    if isinstance(err, StoreUnavailable):
        pushback = (("grpc-retry-pushback-ms", str(round(err.retry_after_s * 1000))),)
        out = out._replace(trailing_metadata=tuple(out.trailing_metadata) + pushback)
    return out


def code_number(code: grpc.StatusCode) -> int:
    """The numeric google.rpc.Code of a status (for in-band ``FrameError.code``)."""
    return code.value[0]
