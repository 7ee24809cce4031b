"""Conversions from the model registry's plain types to ``stylecast.v1`` ModelAdmin messages."""

from __future__ import annotations

from stylecast.server.model_control import VersionTraffic
from stylecast.server.registry import ArtifactStatus, ModelStatus, UploadProgress
from stylecast.v1 import model_admin_pb2 as apb

ARTIFACT_STATES = {"available": apb.ARTIFACT_STATE_AVAILABLE, "queued": apb.ARTIFACT_STATE_QUEUED,
                   "verifying": apb.ARTIFACT_STATE_VERIFYING, "loading": apb.ARTIFACT_STATE_LOADING,
                   "warming": apb.ARTIFACT_STATE_WARMING, "active": apb.ARTIFACT_STATE_ACTIVE,
                   "failed": apb.ARTIFACT_STATE_FAILED}
MODEL_STATES = {"uploading": apb.MODEL_STATE_UPLOADING, "available": apb.MODEL_STATE_AVAILABLE,
                "loading": apb.MODEL_STATE_LOADING, "active": apb.MODEL_STATE_ACTIVE,
                "failed": apb.MODEL_STATE_FAILED}


def upload_status(name: str, version: str, progress: UploadProgress) -> apb.UploadStatus:
    return apb.UploadStatus(
        name=name, version=version, total_chunks=progress.total_chunks, received_chunks=progress.received_chunks,
        total_bytes=progress.total_bytes, received_bytes=progress.received_bytes, complete=progress.complete,
        missing=[apb.ChunkRef(path=p, index=i) for p, i in progress.missing])


def artifact_status(a: ArtifactStatus) -> apb.ArtifactStatus:
    return apb.ArtifactStatus(format=a.format, backend=a.backend, state=ARTIFACT_STATES[a.state], bytes=a.bytes,
                              done_bytes=a.done_bytes, error=a.error, load_seconds=a.load_seconds)


def model_info(status: ModelStatus) -> apb.ModelInfo:
    info = apb.ModelInfo(name=status.name, version=status.version, state=MODEL_STATES[status.state],
                         bytes=status.bytes, uploaded=status.uploaded, swaps=status.swaps,
                         artifacts=[artifact_status(a) for a in status.artifacts])
    if status.upload is not None:
        info.upload.CopyFrom(upload_status(status.name, status.version, status.upload))
    return info


def traffic_split(model: str, versions: list[VersionTraffic]) -> apb.TrafficSplit:
    return apb.TrafficSplit(model=model, versions=[
        apb.VersionTraffic(version=v.version, percent=v.percent, open_streams=v.open_streams, draining=v.draining,
                           backend=v.backend, format=v.format) for v in versions])
