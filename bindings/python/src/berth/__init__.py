"""berth: an embeddable OCI container registry.

The registry core is berth's Rust crate, reached through its C ABI (``libberth_ffi``)::

    import berth

    registry = berth.Registry("./registry-data")
    response = registry.handle("GET", "/v2/")
    assert response.status == 200

Serve it with any WSGI or ASGI server::

    BERTH_ROOT=./registry-data gunicorn -k gthread --threads 8 'berth.wsgi:create_app()'
    BERTH_ROOT=./registry-data uvicorn --factory berth.asgi:create_app
"""
from ._native import lib as _lib
from .errors import (
    AlreadyExistsError,
    BerthError,
    BerthPanic,
    InvalidArgumentError,
    NotFoundError,
    PreconditionFailedError,
    ResponseBodyError,
    RuntimeUnavailableError,
    StorageCheckError,
    StorageError,
    StorageUnavailableError,
    UnsupportedError,
    WrongStateError,
)
from .registry import (
    S3,
    CollectionReport,
    Exchange,
    MirrorReport,
    Registry,
    Response,
    ScrubReport,
)

#: The version of the native library.
__version__ = _lib.berth_version().decode()

__all__ = [
    "S3",
    "AlreadyExistsError",
    "BerthError",
    "BerthPanic",
    "CollectionReport",
    "Exchange",
    "InvalidArgumentError",
    "MirrorReport",
    "NotFoundError",
    "PreconditionFailedError",
    "Registry",
    "Response",
    "ResponseBodyError",
    "RuntimeUnavailableError",
    "ScrubReport",
    "StorageCheckError",
    "StorageError",
    "StorageUnavailableError",
    "UnsupportedError",
    "WrongStateError",
]
