"""The server's one exception hierarchy and the one function mapping errors to gRPC status."""

from __future__ import annotations

import functools
import logging

import grpc

from stylecast.backends.base import BackendError
from stylecast.model.package import PackageError

log = logging.getLogger(__name__)


class StylecastError(Exception):
    """Base of every error the server reports on purpose; ``code`` is its gRPC status."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgument(StylecastError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(StylecastError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(StylecastError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Aborted(StylecastError):
    code = grpc.StatusCode.ABORTED


class DataLoss(StylecastError):
    code = grpc.StatusCode.DATA_LOSS


class ResourceExhausted(StylecastError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(StylecastError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(StylecastError):
    """Try again later (elsewhere); ``retry_after_s`` is sent to clients as gRPC's retry pushback."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str = "", retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ShuttingDown(Unavailable):
    def __init__(self) -> None:
        super().__init__("server shutting down; retry on another replica or after restart")


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Map any exception to ``(status code, message)``; unknown ones are logged as INTERNAL."""
    if isinstance(exc, StylecastError):
        return exc.code, str(exc)
    if isinstance(exc, PackageError):
        return grpc.StatusCode.FAILED_PRECONDITION, f"model package: {exc}"
    if isinstance(exc, BackendError):
        log.error("backend failure", exc_info=exc)
        return grpc.StatusCode.INTERNAL, f"inference failed: {exc}"
    log.error("unhandled server error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal server error (logged on the server)"


def retry_metadata(exc: BaseException) -> tuple[tuple[str, str], ...]:
    """gRPC's retry pushback trailer for an error that says when to retry (clients' retry
    policies wait that long before the next attempt)."""
    after = getattr(exc, "retry_after_s", None)
    return (("grpc-retry-pushback-ms", str(int(after * 1000))),) if after is not None else ()


def code_number(code: grpc.StatusCode) -> int:
    """The numeric google.rpc.Code of a status (for in-band ``FrameError.code``)."""
    return code.value[0]


def mapped_errors(method):
    """Servicer method decorator: any exception becomes its mapped gRPC status (:func:`to_status`)."""

    @functools.wraps(method)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await context.abort(*to_status(exc), trailing_metadata=retry_metadata(exc))

    return wrapper
