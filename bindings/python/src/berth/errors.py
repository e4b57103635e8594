"""The exceptions berth raises, one per result code of its C ABI.

::

    BerthError
    ├── InvalidArgumentError (also ValueError)
    ├── WrongStateError
    ├── BerthPanic
    ├── RuntimeUnavailableError
    ├── ResponseBodyError
    └── StorageError
        ├── StorageUnavailableError
        ├── StorageCheckError
        ├── NotFoundError
        ├── AlreadyExistsError
        ├── PreconditionFailedError
        └── UnsupportedError

Protocol errors (an unknown blob, a malformed digest) are not exceptions: they are
responses with the OCI error status and JSON body, as a registry client expects.
"""
from __future__ import annotations


class BerthError(Exception):
    """A call into berth failed. ``code`` is the C ABI's result code, ``detail`` says why."""

    code: int = -1

    def __init__(self, message: str, detail: str = "", code: int | None = None) -> None:
        super().__init__(f"{message}: {detail}" if detail else message)
        self.detail = detail
        if code is not None:
            self.code = code


class InvalidArgumentError(BerthError, ValueError):
    """An argument was not valid (a value out of range, a string that is not UTF-8)."""

    code = 2


class WrongStateError(BerthError):
    """A call that does not fit the exchange's state (a write after the body finished)."""

    code = 3


class BerthPanic(BerthError):
    """berth hit a bug and recovered at its boundary; the object used should be dropped."""

    code = 4


class RuntimeUnavailableError(BerthError):
    """berth's worker threads could not be started."""

    code = 6


class ResponseBodyError(BerthError):
    """A response body failed part-way: storage failed while it was read."""

    code = 7


class StorageError(BerthError):
    """The storage failed or refused an operation."""

    code = 104


class StorageUnavailableError(StorageError):
    """The configured storage cannot be opened (a directory that cannot be created, say)."""

    code = 5


class StorageCheckError(StorageError):
    """The storage does not meet berth's storage contract (``Registry.check_storage``)."""

    code = 8


class NotFoundError(StorageError):
    """Storage: no such object."""

    code = 100


class AlreadyExistsError(StorageError):
    """Storage: a create-only write found the key taken."""

    code = 101


class PreconditionFailedError(StorageError):
    """Storage: a compare-and-swap write found another version."""

    code = 102


class UnsupportedError(StorageError):
    """Storage: the backend cannot do this."""

    code = 103


_BY_CODE = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        WrongStateError,
        BerthPanic,
        RuntimeUnavailableError,
        ResponseBodyError,
        StorageError,
        StorageUnavailableError,
        StorageCheckError,
        NotFoundError,
        AlreadyExistsError,
        PreconditionFailedError,
        UnsupportedError,
    )
}


def error_for(code: int, message: str, detail: str) -> BerthError:
    """The exception for a result code (a NULL argument is a bug of these bindings)."""
    cls = _BY_CODE.get(code, BerthError)
    return cls(message, detail, code)
