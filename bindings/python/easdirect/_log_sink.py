"""libeasdirect's log lines (``eas_options_set_log``) routed to a :mod:`logging` logger.

The library calls its log function on one log thread of its own, one line at a time, at most
10 lines a second per client: the callback here takes the GIL, hands the line to
``logger.log`` and returns. It never lets an exception reach the library. Its user data (a
:class:`LogSink`, through a cffi handle) stays in a registry until the library's
free_user_data runs, once the options and every client made with them are freed: on the
thread that lets go last, which may be the log thread. Both go through the C functions
``easpy_log_line`` and ``easpy_log_free`` (see ``_build_ffi``), which enter no Python code once
the interpreter exits (:func:`stop`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from typing import Any, Dict, Literal, Optional, Union

from ._client import _tls
from ._native import ffi, lib

#: The log function and free_user_data given to eas_options_set_log.
LINE_FN = ffi.addressof(lib, "easpy_log_line")
FREE_FN = ffi.addressof(lib, "easpy_log_free")

#: The library's levels (1 error, 2 warn, 3 info, 4 debug) as :mod:`logging`'s.
LEVELS: Dict[int, int] = {1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: logging.DEBUG}

#: The name of the logger a client logs to when it is given none.
DEFAULT_LOGGER = "easdirect"

#: A logger, or an adapter of one.
AnyLogger = Union[logging.Logger, "logging.LoggerAdapter[Any]"]
#: What the ``logger`` argument of :class:`easdirect.Client` takes: a logger or an adapter,
#: None for the ``easdirect`` logger, False for no logging.
LoggerOption = Union[AnyLogger, Literal[False], None]

# id(sink) -> sink: each LogSink the library may still call, until its free_user_data runs.
_registry: Dict[int, "LogSink"] = {}
#: How long the exit hook waits for a log call that entered Python before it (a handler that
#: blocks), in seconds.
STOP_WAIT = 5.0


def resolve(logger: LoggerOption) -> Optional[AnyLogger]:
    """The logger a client logs to: ``logger``, the ``easdirect`` logger for None, or None (no
    logging) for False. TypeError for anything else."""
    if logger is None:
        return logging.getLogger(DEFAULT_LOGGER)
    if logger is False:
        return None
    if isinstance(logger, (logging.Logger, logging.LoggerAdapter)):
        return logger
    raise TypeError(
        "logger must be a logging.Logger or logging.LoggerAdapter, None (the 'easdirect' "
        f"logger) or False (no logging), got {type(logger).__name__}"
    )


def max_level(logger: AnyLogger) -> int:
    """The library's ``max_level`` for ``logger`` as it is configured now: the most verbose
    level it is enabled for (4 for DEBUG .. 1 for ERROR), 0 when it takes none of them (set to
    CRITICAL, disabled, or ``logging.disable``)."""
    for native in (4, 3, 2, 1):
        if logger.isEnabledFor(LEVELS[native]):
            return native
    return 0


def stop() -> None:
    """At interpreter exit: from now on a line is dropped, and a free_user_data leaves its
    sink, without entering Python; waits (the GIL released) for the calls already in Python."""
    running = lib.easpy_log_stop()
    deadline = time.monotonic() + STOP_WAIT
    while running and time.monotonic() < deadline:
        time.sleep(0.001)
        running = lib.easpy_log_running()


if hasattr(os, "register_at_fork"):
    # A log call of the parent's log thread, running at fork(), is not running in the child.
    os.register_at_fork(after_in_child=lib.easpy_log_after_fork)


class LogSink:
    """The user data of one client's log function: the logger, kept (in a module registry)
    until the library's free_user_data releases it."""

    def __init__(self, logger: AnyLogger) -> None:
        self.logger: Optional[AnyLogger] = logger
        self.handle: Any = ffi.new_handle(self)
        _registry[id(self)] = self

    @property
    def active(self) -> bool:
        """False once the library let go of it."""
        return self.handle is not None

    def emit(self, level: int, message: Any) -> None:
        logger = self.logger
        if logger is None:
            return
        # A client finalized by a collection that runs in here is freed later (see
        # Client.__del__): eas_client_free must not run on the library's log thread.
        outer = getattr(_tls, "in_callback", False)
        _tls.in_callback = True
        try:
            pylevel = LEVELS.get(level, logging.DEBUG)
            if not logger.isEnabledFor(pylevel):
                return
            text = ffi.string(message).decode("utf-8", "replace")
            try:
                logger.log(pylevel, "%s", text)
            except BaseException:
                # Handlers report their own errors (Handler.handleError); this is a filter or
                # a Logger subclass that raised. Said on stderr, as logging does: the line is
                # lost, the next one is logged as usual.
                try:
                    sys.stderr.write(f"easdirect: the logger raised on the line {text!r}\n")
                    traceback.print_exc()
                except BaseException:
                    pass
        finally:
            _tls.in_callback = outer

    def _finish(self) -> None:
        """free_user_data (through easpy_on_free): releases the logger and the handle."""
        _registry.pop(id(self), None)
        self.logger = None
        self.handle = None


@ffi.def_extern()
def easpy_on_log(user_data: Any, level: int, message: Any) -> None:
    try:
        ffi.from_handle(user_data).emit(int(level), message)
    except BaseException:  # never let anything escape into the library's thread
        pass
