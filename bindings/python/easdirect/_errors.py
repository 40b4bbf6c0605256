"""Errors: one ``easdirect.Error`` subclass per ``eas_status``, carrying its code and message."""

from __future__ import annotations

import builtins
import enum
from typing import Dict, Type


class Status(enum.IntEnum):
    """The C ABI's ``eas_status`` values (stable, never reused)."""

    OK = 0
    NULL_PARAMETER = 1
    INVALID_ARGUMENT = 2
    NO_INSTANCE = 3
    TIMEOUT = 4
    DISCOVERY_FAILED = 5
    BUFFER_TOO_SMALL = 6
    UNKNOWN_INSTANCE = 7
    CLOSED = 8
    PANIC = 99


class Error(Exception):
    """An error from libeasdirect: ``code`` is the ``eas_status`` (a :class:`Status` when known,
    else the raw int) and ``message`` the library's sentence (naming the key, value, URL or HTTP
    status at fault)."""

    code: int
    message: str

    def __init__(self, code: int, message: str) -> None:
        try:
            code = Status(code)
        except ValueError:
            pass
        self.code = code
        self.message = message
        super().__init__(code, message)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({int(self.code)}, {self.message!r})"


class NullParameterError(Error):
    """``EAS_STATUS_NULL_PARAMETER``: a required pointer was NULL (a binding bug)."""


class InvalidArgumentError(Error, ValueError):
    """``EAS_STATUS_INVALID_ARGUMENT``: a bad target, option key or value; for a
    :class:`Call`: a record with no attempt open, an unknown outcome or body, a status out of
    100-599."""


class NoInstanceError(Error):
    """``EAS_STATUS_NO_INSTANCE``: nothing selectable (none known yet, or all excluded); for
    ``Call.next``: no attempt left (budget spent, every candidate tried, or the call ended)."""


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001 - it is easdirect.TimeoutError
    """``EAS_STATUS_TIMEOUT``: ``wait_ready`` reached its deadline (the message holds the last
    fetch error). Also a builtin ``TimeoutError``."""


class DiscoveryFailedError(Error):
    """``EAS_STATUS_DISCOVERY_FAILED``: the last discovery fetch failed (URL and status in the
    message)."""


class BufferTooSmallError(Error):
    """``EAS_STATUS_BUFFER_TOO_SMALL`` (handled inside the binding; never raised in practice)."""


class UnknownInstanceError(Error):
    """``EAS_STATUS_UNKNOWN_INSTANCE``: the id is not in the current list (harmless)."""


class ClosedError(Error):
    """``EAS_STATUS_CLOSED``: the client was closed (or, for a :class:`Call`'s methods, that
    call)."""


class PanicError(Error):
    """``EAS_STATUS_PANIC``: a bug inside the library was contained."""


_BY_CODE: Dict[int, Type[Error]] = {
    Status.NULL_PARAMETER: NullParameterError,
    Status.INVALID_ARGUMENT: InvalidArgumentError,
    Status.NO_INSTANCE: NoInstanceError,
    Status.TIMEOUT: TimeoutError,
    Status.DISCOVERY_FAILED: DiscoveryFailedError,
    Status.BUFFER_TOO_SMALL: BufferTooSmallError,
    Status.UNKNOWN_INSTANCE: UnknownInstanceError,
    Status.CLOSED: ClosedError,
    Status.PANIC: PanicError,
}


def error_for(code: int, message: str) -> Error:
    """The ``Error`` subclass instance for ``code``."""
    return _BY_CODE.get(code, Error)(code, message)
