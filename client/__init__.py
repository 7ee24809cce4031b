"""stylecast client SDK: ``Client`` (blocking) and ``AsyncClient`` (asyncio), one implementation.

    from stylecast.client import Client
    with Client("localhost:50051") as client:
        style = client.register_style("starry.jpg", name="starry")
        client.stylize("photo.jpg", style).save("out.jpg")
"""

from stylecast.client.aio import AsyncClient
from stylecast.client.channel import DEFAULT_TARGET, TLS
from stylecast.client.errors import (Aborted, AlreadyExists, Cancelled, DataLoss, DeadlineExceeded,
                                     FailedPrecondition, Internal, InvalidArgument, NotFound, OutOfRange,
                                     PermissionDenied, ResourceExhausted, StylecastError, Unauthenticated,
                                     Unavailable, Unimplemented, error_for)
from stylecast.client.messages import StreamOptions
from stylecast.client.sdk import Client
from stylecast.client.types import (ArtifactInfo, BackendInfo, FrameResult, Limits, ModelInfo, Output, Style,
                                    StyleMatch, Timings, Unloaded, UploadInfo)

__all__ = [
    "Aborted", "AlreadyExists", "ArtifactInfo", "AsyncClient", "BackendInfo", "ModelInfo", "UploadInfo", "Cancelled", "Client", "DEFAULT_TARGET", "DataLoss",
    "DeadlineExceeded", "FailedPrecondition", "FrameResult", "Internal", "InvalidArgument", "Limits", "NotFound",
    "OutOfRange", "Output", "PermissionDenied", "ResourceExhausted", "StreamOptions", "Style", "StyleMatch",
    "StylecastError", "TLS", "Timings", "Unauthenticated", "Unavailable", "Unimplemented", "Unloaded", "error_for",
]
