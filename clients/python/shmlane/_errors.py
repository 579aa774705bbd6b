"""Exceptions of the shmlane package, one per absl/gRPC status code.

Every error the native extension or ``shmlane.control`` raises is a
:class:`Error` (or, for bad arguments of the Python API itself, a plain
``TypeError``/``ValueError``). ``Error.code`` is the google.rpc code number
(absl::StatusCode), ``Error.message`` the daemon's or library's message,
which says what to do.
"""

from __future__ import annotations

from typing import Dict, Type


class Error(Exception):
    """Base class of every shmlane error."""

    #: google.rpc.Code / absl::StatusCode number of this class.
    code: int = 2

    def __init__(self, message: str = "", code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class Cancelled(Error):
    """The call was cancelled (Consumer.interrupt(), Server.stop())."""
    code = 1


class Unknown(Error):
    code = 2


class InvalidArgument(Error, ValueError):
    """The caller's mistake: a bad name, a frame too large, a bad option."""
    code = 3


class DeadlineExceeded(Error, TimeoutError):
    """The timeout passed before the call could complete."""
    code = 4


class NotFound(Error, LookupError):
    """No such channel."""
    code = 5


class AlreadyExists(Error):
    code = 6


class PermissionDenied(Error, PermissionError):
    """No grant for this uid/gid: ask an admin for ``shmlanectl grants add``."""
    code = 7


class ResourceExhausted(Error):
    """A quota, or a full ring under a fail-fast policy."""
    code = 8


class FailedPrecondition(Error):
    """Wrong state: wrong pattern for the role, a consumer already attached."""
    code = 9


class Aborted(Error):
    code = 10


class OutOfRange(Error):
    code = 11


class Unimplemented(Error):
    code = 12


class Internal(Error):
    code = 13


class Unavailable(Error, ConnectionError):
    """The daemon or the peer is not there (not running, gone, lane closed)."""
    code = 14


class DataLoss(Error):
    """A corrupt lane or a malformed message from the daemon."""
    code = 15


class Unauthenticated(Error):
    code = 16


class Full(ResourceExhausted):
    """The ring has no room now (reserve(), or write() under a fail-fast policy)."""


class Closed(Unavailable):
    """The peer closed the lane: the consumer or server went away, or the
    daemon closed it. Attach again to reach the next one."""


_BY_CODE: Dict[int, Type[Error]] = {
    cls.code: cls
    for cls in (Cancelled, Unknown, InvalidArgument, DeadlineExceeded, NotFound,
                AlreadyExists, PermissionDenied, ResourceExhausted, FailedPrecondition,
                Aborted, OutOfRange, Unimplemented, Internal, Unavailable, DataLoss,
                Unauthenticated)
}


def error_for_code(code: int, message: str) -> Error:
    """The exception for a google.rpc code number (Unknown for unknown codes)."""
    cls = _BY_CODE.get(code, Unknown)
    return cls(message, code if cls is Unknown else None)
