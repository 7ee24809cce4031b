from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PixelFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIXEL_FORMAT_UNSPECIFIED: _ClassVar[PixelFormat]
    PIXEL_FORMAT_RGB24: _ClassVar[PixelFormat]
    PIXEL_FORMAT_RGBA32: _ClassVar[PixelFormat]
    PIXEL_FORMAT_GRAY8: _ClassVar[PixelFormat]

class Encoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCODING_UNSPECIFIED: _ClassVar[Encoding]
    ENCODING_JPEG: _ClassVar[Encoding]
    ENCODING_PNG: _ClassVar[Encoding]
    ENCODING_WEBP: _ClassVar[Encoding]
    ENCODING_RAW_RGB24: _ClassVar[Encoding]

class StreamMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_MODE_UNSPECIFIED: _ClassVar[StreamMode]
    STREAM_MODE_EVERY_FRAME: _ClassVar[StreamMode]
    STREAM_MODE_LIVE: _ClassVar[StreamMode]
PIXEL_FORMAT_UNSPECIFIED: PixelFormat
PIXEL_FORMAT_RGB24: PixelFormat
PIXEL_FORMAT_RGBA32: PixelFormat
PIXEL_FORMAT_GRAY8: PixelFormat
ENCODING_UNSPECIFIED: Encoding
ENCODING_JPEG: Encoding
ENCODING_PNG: Encoding
ENCODING_WEBP: Encoding
ENCODING_RAW_RGB24: Encoding
STREAM_MODE_UNSPECIFIED: StreamMode
STREAM_MODE_EVERY_FRAME: StreamMode
STREAM_MODE_LIVE: StreamMode

class Image(_message.Message):
    __slots__ = ("data", "pixel_format", "width", "height")
    DATA_FIELD_NUMBER: _ClassVar[int]
    PIXEL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    pixel_format: PixelFormat
    width: int
    height: int
    def __init__(self, data: _Optional[bytes] = ..., pixel_format: _Optional[_Union[PixelFormat, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class StyleWeight(_message.Message):
    __slots__ = ("style_id", "weight")
    STYLE_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    style_id: str
    weight: float
    def __init__(self, style_id: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class OutputOptions(_message.Message):
    __slots__ = ("encoding", "quality", "width", "height")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    encoding: Encoding
    quality: int
    width: int
    height: int
    def __init__(self, encoding: _Optional[_Union[Encoding, str]] = ..., quality: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class StreamConfig(_message.Message):
    __slots__ = ("style_id", "blend", "strength", "output", "process_max_side", "mode", "model", "model_version")
    STYLE_ID_FIELD_NUMBER: _ClassVar[int]
    BLEND_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    PROCESS_MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    style_id: str
    blend: _containers.RepeatedCompositeFieldContainer[StyleWeight]
    strength: float
    output: OutputOptions
    process_max_side: int
    mode: StreamMode
    model: str
    model_version: str
    def __init__(self, style_id: _Optional[str] = ..., blend: _Optional[_Iterable[_Union[StyleWeight, _Mapping]]] = ..., strength: _Optional[float] = ..., output: _Optional[_Union[OutputOptions, _Mapping]] = ..., process_max_side: _Optional[int] = ..., mode: _Optional[_Union[StreamMode, str]] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("id", "image")
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    id: int
    image: Image
    def __init__(self, id: _Optional[int] = ..., image: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...

class StylizeRequest(_message.Message):
    __slots__ = ("config", "frame")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    config: StreamConfig
    frame: Frame
    def __init__(self, config: _Optional[_Union[StreamConfig, _Mapping]] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class StageTimings(_message.Message):
    __slots__ = ("queue_ms", "decode_ms", "infer_ms", "encode_ms", "total_ms")
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    INFER_MS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    queue_ms: float
    decode_ms: float
    infer_ms: float
    encode_ms: float
    total_ms: float
    def __init__(self, queue_ms: _Optional[float] = ..., decode_ms: _Optional[float] = ..., infer_ms: _Optional[float] = ..., encode_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class StylizedFrame(_message.Message):
    __slots__ = ("id", "image", "timings", "backend", "model", "model_version", "batch_size")
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    id: int
    image: Image
    timings: StageTimings
    backend: str
    model: str
    model_version: str
    batch_size: int
    def __init__(self, id: _Optional[int] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., timings: _Optional[_Union[StageTimings, _Mapping]] = ..., backend: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., batch_size: _Optional[int] = ...) -> None: ...

class FrameError(_message.Message):
    __slots__ = ("id", "code", "message")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: int
    code: int
    message: str
    def __init__(self, id: _Optional[int] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class FrameDropped(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: int
    reason: str
    def __init__(self, id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class StylizeResponse(_message.Message):
    __slots__ = ("frame", "error", "dropped")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    frame: StylizedFrame
    error: FrameError
    dropped: FrameDropped
    def __init__(self, frame: _Optional[_Union[StylizedFrame, _Mapping]] = ..., error: _Optional[_Union[FrameError, _Mapping]] = ..., dropped: _Optional[_Union[FrameDropped, _Mapping]] = ...) -> None: ...

class StylizeImageRequest(_message.Message):
    __slots__ = ("config", "image")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    config: StreamConfig
    image: Image
    def __init__(self, config: _Optional[_Union[StreamConfig, _Mapping]] = ..., image: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...

class StylizeImageResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: StylizedFrame
    def __init__(self, result: _Optional[_Union[StylizedFrame, _Mapping]] = ...) -> None: ...

class StyleUpload(_message.Message):
    __slots__ = ("name", "chunk")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    name: str
    chunk: bytes
    def __init__(self, name: _Optional[str] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class Style(_message.Message):
    __slots__ = ("id", "name", "created_unix_ms", "thumbnail_jpeg", "model_versions")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_JPEG_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    created_unix_ms: int
    thumbnail_jpeg: bytes
    model_versions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., thumbnail_jpeg: _Optional[bytes] = ..., model_versions: _Optional[_Iterable[str]] = ...) -> None: ...

class RegisterStyleResponse(_message.Message):
    __slots__ = ("style", "created")
    STYLE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    style: Style
    created: bool
    def __init__(self, style: _Optional[_Union[Style, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class GetStyleRequest(_message.Message):
    __slots__ = ("id", "include_thumbnail")
    ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    id: str
    include_thumbnail: bool
    def __init__(self, id: _Optional[str] = ..., include_thumbnail: _Optional[bool] = ...) -> None: ...

class ListStylesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListStylesResponse(_message.Message):
    __slots__ = ("styles", "next_page_token")
    STYLES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    styles: _containers.RepeatedCompositeFieldContainer[Style]
    next_page_token: str
    def __init__(self, styles: _Optional[_Iterable[_Union[Style, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteStyleRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteStyleResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class SearchStylesRequest(_message.Message):
    __slots__ = ("style_id", "image", "limit", "model")
    STYLE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    style_id: str
    image: Image
    limit: int
    model: str
    def __init__(self, style_id: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., limit: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class StyleMatch(_message.Message):
    __slots__ = ("style", "score")
    STYLE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    style: Style
    score: float
    def __init__(self, style: _Optional[_Union[Style, _Mapping]] = ..., score: _Optional[float] = ...) -> None: ...

class SearchStylesResponse(_message.Message):
    __slots__ = ("matches",)
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[StyleMatch]
    def __init__(self, matches: _Optional[_Iterable[_Union[StyleMatch, _Mapping]]] = ...) -> None: ...

class GetLimitsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_message_bytes", "max_pixels")
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_PIXELS_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    max_pixels: int
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_pixels: _Optional[int] = ...) -> None: ...
