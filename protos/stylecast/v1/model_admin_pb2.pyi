from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ArtifactState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARTIFACT_STATE_UNSPECIFIED: _ClassVar[ArtifactState]
    ARTIFACT_STATE_AVAILABLE: _ClassVar[ArtifactState]
    ARTIFACT_STATE_QUEUED: _ClassVar[ArtifactState]
    ARTIFACT_STATE_VERIFYING: _ClassVar[ArtifactState]
    ARTIFACT_STATE_LOADING: _ClassVar[ArtifactState]
    ARTIFACT_STATE_WARMING: _ClassVar[ArtifactState]
    ARTIFACT_STATE_ACTIVE: _ClassVar[ArtifactState]
    ARTIFACT_STATE_FAILED: _ClassVar[ArtifactState]

class ModelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATE_UNSPECIFIED: _ClassVar[ModelState]
    MODEL_STATE_UPLOADING: _ClassVar[ModelState]
    MODEL_STATE_AVAILABLE: _ClassVar[ModelState]
    MODEL_STATE_LOADING: _ClassVar[ModelState]
    MODEL_STATE_ACTIVE: _ClassVar[ModelState]
    MODEL_STATE_FAILED: _ClassVar[ModelState]
ARTIFACT_STATE_UNSPECIFIED: ArtifactState
ARTIFACT_STATE_AVAILABLE: ArtifactState
ARTIFACT_STATE_QUEUED: ArtifactState
ARTIFACT_STATE_VERIFYING: ArtifactState
ARTIFACT_STATE_LOADING: ArtifactState
ARTIFACT_STATE_WARMING: ArtifactState
ARTIFACT_STATE_ACTIVE: ArtifactState
ARTIFACT_STATE_FAILED: ArtifactState
MODEL_STATE_UNSPECIFIED: ModelState
MODEL_STATE_UPLOADING: ModelState
MODEL_STATE_AVAILABLE: ModelState
MODEL_STATE_LOADING: ModelState
MODEL_STATE_ACTIVE: ModelState
MODEL_STATE_FAILED: ModelState

class FileChunk(_message.Message):
    __slots__ = ("path", "index", "data")
    PATH_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    path: str
    index: int
    data: bytes
    def __init__(self, path: _Optional[str] = ..., index: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("manifest", "chunk")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    manifest: bytes
    chunk: FileChunk
    def __init__(self, manifest: _Optional[bytes] = ..., chunk: _Optional[_Union[FileChunk, _Mapping]] = ...) -> None: ...

class ChunkRef(_message.Message):
    __slots__ = ("path", "index")
    PATH_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    path: str
    index: int
    def __init__(self, path: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class UploadStatus(_message.Message):
    __slots__ = ("name", "version", "total_chunks", "received_chunks", "total_bytes", "received_bytes", "missing", "complete")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    total_chunks: int
    received_chunks: int
    total_bytes: int
    received_bytes: int
    missing: _containers.RepeatedCompositeFieldContainer[ChunkRef]
    complete: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., total_chunks: _Optional[int] = ..., received_chunks: _Optional[int] = ..., total_bytes: _Optional[int] = ..., received_bytes: _Optional[int] = ..., missing: _Optional[_Iterable[_Union[ChunkRef, _Mapping]]] = ..., complete: _Optional[bool] = ...) -> None: ...

class ArtifactStatus(_message.Message):
    __slots__ = ("format", "backend", "state", "bytes", "done_bytes", "error", "load_seconds")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    DONE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    format: str
    backend: str
    state: ArtifactState
    bytes: int
    done_bytes: int
    error: str
    load_seconds: float
    def __init__(self, format: _Optional[str] = ..., backend: _Optional[str] = ..., state: _Optional[_Union[ArtifactState, str]] = ..., bytes: _Optional[int] = ..., done_bytes: _Optional[int] = ..., error: _Optional[str] = ..., load_seconds: _Optional[float] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "state", "bytes", "artifacts", "uploaded", "upload", "swaps")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    SWAPS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    state: ModelState
    bytes: int
    artifacts: _containers.RepeatedCompositeFieldContainer[ArtifactStatus]
    uploaded: bool
    upload: UploadStatus
    swaps: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., state: _Optional[_Union[ModelState, str]] = ..., bytes: _Optional[int] = ..., artifacts: _Optional[_Iterable[_Union[ArtifactStatus, _Mapping]]] = ..., uploaded: _Optional[bool] = ..., upload: _Optional[_Union[UploadStatus, _Mapping]] = ..., swaps: _Optional[int] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("name", "version", "load_order")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LOAD_ORDER_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    load_order: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., load_order: _Optional[_Iterable[str]] = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("name", "version", "delete_files")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DELETE_FILES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    delete_files: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., delete_files: _Optional[bool] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ("unloaded", "deleted", "draining_streams")
    UNLOADED_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    DRAINING_STREAMS_FIELD_NUMBER: _ClassVar[int]
    unloaded: bool
    deleted: bool
    draining_streams: int
    def __init__(self, unloaded: _Optional[bool] = ..., deleted: _Optional[bool] = ..., draining_streams: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class WatchModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class BackendInfo(_message.Message):
    __slots__ = ("name", "installed", "formats", "serving", "unavailable")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INSTALLED_FIELD_NUMBER: _ClassVar[int]
    FORMATS_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    installed: bool
    formats: _containers.RepeatedScalarFieldContainer[str]
    serving: bool
    unavailable: str
    def __init__(self, name: _Optional[str] = ..., installed: _Optional[bool] = ..., formats: _Optional[_Iterable[str]] = ..., serving: _Optional[bool] = ..., unavailable: _Optional[str] = ...) -> None: ...

class ListBackendsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetTrafficSplitRequest(_message.Message):
    __slots__ = ("model", "weights")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    weights: _containers.ScalarMap[str, int]
    def __init__(self, model: _Optional[str] = ..., weights: _Optional[_Mapping[str, int]] = ...) -> None: ...

class GetTrafficSplitRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class VersionTraffic(_message.Message):
    __slots__ = ("version", "percent", "open_streams", "draining", "backend", "format")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    OPEN_STREAMS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    version: str
    percent: int
    open_streams: int
    draining: bool
    backend: str
    format: str
    def __init__(self, version: _Optional[str] = ..., percent: _Optional[int] = ..., open_streams: _Optional[int] = ..., draining: _Optional[bool] = ..., backend: _Optional[str] = ..., format: _Optional[str] = ...) -> None: ...

class TrafficSplit(_message.Message):
    __slots__ = ("model", "versions")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    versions: _containers.RepeatedCompositeFieldContainer[VersionTraffic]
    def __init__(self, model: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[VersionTraffic, _Mapping]]] = ...) -> None: ...

class ListBackendsResponse(_message.Message):
    __slots__ = ("backends",)
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    backends: _containers.RepeatedCompositeFieldContainer[BackendInfo]
    def __init__(self, backends: _Optional[_Iterable[_Union[BackendInfo, _Mapping]]] = ...) -> None: ...
