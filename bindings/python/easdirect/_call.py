"""Calls: one logical request and its attempts, over the C ABI's ``eas_call_*`` functions.

The core decides (which instance each attempt goes to, whether to retry, what an outcome means
for ejection, back-off and the cost of the next pick); a :class:`Call` only carries the
caller's facts to it. The caller does the I/O with its own HTTP stack::

    with client.call(key=session_id) as call:
        while True:
            inst = call.next()                      # NoInstanceError: nothing left to try
            try:
                resp = send(inst)
            except ConnectionRefusedError:
                if call.record(Outcome.CONNECT_FAILED):
                    continue
                raise
            if not call.record(status=resp.status, headers=resp.headers):
                break                               # the core decided: this is the answer
        body = resp.read()
        call.finish(Body.DONE)

Memory: the native call is freed by :meth:`Call.close` (or ``with``), else by a
``weakref.finalize`` once the Call is unreachable; that finalizer holds the client, so the native
client is never freed while one of its calls exists (``eas_call_free`` must come first).
"""

from __future__ import annotations

import enum
import operator
import threading
import weakref
from typing import TYPE_CHECKING, Any, Iterable, List, Mapping, Optional, Protocol, Tuple, Union

from ._errors import ClosedError, InvalidArgumentError, Status, error_for
from ._fastpick import instance as _instance
from ._native import ffi, lib

if TYPE_CHECKING:  # pragma: no cover
    from ._client import Client, Instance

__all__ = ["Body", "Call", "Headers", "Outcome"]

_OK = 0
_NULL = ffi.NULL
_CLOSED = int(Status.CLOSED)
_NO_INSTANCE = int(Status.NO_INSTANCE)
_INVALID_ARGUMENT = int(Status.INVALID_ARGUMENT)
_NOT_IDEMPOTENT = int(lib.EAS_CALL_NOT_IDEMPOTENT)
_MAX_HEADERS = int(lib.EASPY_MAX_HEADERS)
# The only response headers the core reads; every other one stays in Python.
_LOAD_HEADERS = frozenset(("endpoint-load-metrics", "retry-after"))

#: Response headers as :meth:`Call.record` takes them: any Mapping (a dict, ``requests``'
#: ``CaseInsensitiveDict``, ``httpx.Headers``, urllib3's ``HTTPHeaderDict``), any object with
#: ``items()`` (``http.client.HTTPMessage``), or an iterable of ``(name, value)`` pairs; names
#: and values as str or bytes.
Headers = Union[Mapping[Any, Any], "_HeaderItems", Iterable[Tuple[Any, Any]]]


class _HeaderItems(Protocol):
    """Anything with ``items()`` giving ``(name, value)`` pairs (``http.client.HTTPMessage``)."""

    def items(self) -> Iterable[Tuple[Any, Any]]: ...


class Outcome(enum.IntEnum):
    """How an attempt went, as far as response headers (the C ``eas_outcome``)."""

    #: Response headers received, with their HTTP status (100-599).
    RESPONSE = 0
    #: Nothing was sent: refused, unreachable, TLS failed (the one outcome a not-idempotent
    #: call retries).
    CONNECT_FAILED = 1
    #: No response headers within the attempt's deadline.
    TIMEOUT = 2
    #: The caller gave up: not the instance's fault; it ends the call.
    CANCELLED = 3
    #: Sent (maybe in part), then reset before response headers.
    RESET = 4


class Body(enum.IntEnum):
    """How a recorded response's body ended (the C ``eas_body``)."""

    #: Read to its end.
    DONE = 0
    #: Cut by the instance (reset, truncated): counted as a failure of that instance.
    BROKEN = 1
    #: The caller stopped reading: nothing is reported.
    DROPPED = 2


_OUTCOMES = {int(o): o for o in Outcome}
_BODIES = {int(b): b for b in Body}


def _text(x: Any) -> bytes:
    """A header name or value as the bytes of a C string (NULs dropped: none is legal)."""
    b = x if isinstance(x, bytes) else str(x).encode("utf-8", "replace")
    return b.replace(b"\0", b"") if b"\0" in b else b


def _load_headers(headers: Headers) -> Tuple[bytes, int]:
    """The ``endpoint-load-metrics`` and ``retry-after`` lines of ``headers`` (names matched
    case-insensitively) as ``easpy_call_record`` takes them: a buffer and a count."""
    items = headers.items() if hasattr(headers, "items") else headers
    parts: List[bytes] = []
    n = 0
    for name, value in items:
        key = name.decode("latin-1") if isinstance(name, (bytes, bytearray)) else name
        if not isinstance(key, str) or key.lower() not in _LOAD_HEADERS:
            continue
        if n == _MAX_HEADERS:
            break
        parts.append(_text(key))
        parts.append(_text(bytes(value) if isinstance(value, bytearray) else value))
        n += 1
    return (b"\0".join(parts) + b"\0", n) if n else (b"", 0)


def _free_call(client: "Client", h: Any) -> None:
    """Frees a native call: the finalizer of a :class:`Call`. ``client`` is held (here, by the
    finalizer) until the call is freed, so that the native client outlives it."""
    lib.eas_call_free(h)
    _ = client  # released when this returns, after the call


class Call:
    """One logical request and its attempts (see :meth:`Client.call`).

    The loop: :meth:`next` gives the instance for an attempt (never one this call tried),
    :meth:`record` says how it went and returns whether to try again, :meth:`finish` says how
    the chosen response's body ended, :meth:`close` (or the end of a ``with`` block) releases
    the call. Every path that ends an attempt takes it out of the instance's in-flight count
    exactly once: an attempt not recorded by then ends as CANCELLED, a recorded one's body as
    DONE (as DROPPED when a ``with`` block ends with an exception).

    A Call may move between threads but is used by one at a time: a method called while
    another thread is inside one raises :class:`RuntimeError`. It holds its client alive. After
    the client is closed :meth:`next` raises :class:`ClosedError`, while :meth:`record`,
    :meth:`finish` and :meth:`close` still work (a response already received is never lost).
    """

    __slots__ = ("_client", "_h", "_out", "_outv", "_retry", "_busy", "_free", "__weakref__")

    def __init__(self, client: "Client", key: Union[bytes, str, None], idempotent: bool) -> None:
        """Use :meth:`Client.call`."""
        self._h: Any = _NULL
        if key is None:
            ckey, klen = _NULL, 0
        elif isinstance(key, str):
            try:
                ckey = key.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidArgumentError(
                    Status.INVALID_ARGUMENT, "the call's key is not valid Unicode (a lone surrogate)"
                ) from None
            klen = len(ckey)
        elif isinstance(key, (bytes, bytearray, memoryview)):
            ckey = bytes(key)
            klen = len(ckey)
        else:
            raise TypeError(f"key must be bytes, str or None, got {type(key).__name__}")
        if not klen:
            ckey = _NULL  # an empty key is no key
        out = ffi.new("eas_call **")
        st = lib.eas_call_begin(client._h, ckey, klen, 0 if idempotent else _NOT_IDEMPOTENT, out)
        if st != _OK:
            raise error_for(st, "the client is closed" if st == _CLOSED else _status_text(st))
        self._client = client
        self._h = out[0]
        self._out = ffi.new("eas_instance *")
        self._outv = int(ffi.cast("uintptr_t", self._out))
        self._retry = ffi.new("uint32_t *")
        self._busy = threading.Lock()
        self._free = weakref.finalize(self, _free_call, client, self._h)
        # Not at interpreter exit: a daemon thread may still be inside a method then, and the
        # process is ending anyway.
        self._free.atexit = False

    def _enter(self) -> Any:
        """Takes the call for one method; the native handle, or ClosedError once closed."""
        if not self._busy.acquire(False):
            raise RuntimeError("easdirect.Call used from two threads at once")
        h = self._h
        if h == _NULL:
            self._busy.release()
            raise ClosedError(Status.CLOSED, "the call is closed")
        return h

    def next(self) -> "Instance":
        """The instance for the next attempt, among those this call has not tried; it is in
        flight from now. An attempt still open (no :meth:`record`) ends as CANCELLED first,
        which ends the call; a recorded one's body is taken as DONE.

        Raises :class:`NoInstanceError` when the attempt budget (``max_attempts``) is spent,
        no untried instance is left, or the last outcome ended the call (a final answer, a
        CANCELLED); :class:`ClosedError` after the client (or this call) was closed."""
        h = self._enter()
        try:
            st = lib.eas_call_next(h, self._out)
            if st == _OK:
                return _instance(self._client._cache, self._outv)
        finally:
            self._busy.release()
        if st == _NO_INSTANCE:
            raise error_for(
                st,
                "no instance for another attempt: the attempt budget is spent, every candidate "
                "was tried, or the last outcome ended the call",
            )
        raise error_for(st, "the client is closed" if st == _CLOSED else _status_text(st))

    def record(
        self,
        outcome: Union[Outcome, int] = Outcome.RESPONSE,
        *,
        status: Optional[int] = None,
        headers: Optional[Headers] = None,
    ) -> bool:
        """Records how the open attempt went and returns whether to try again (call
        :meth:`next`): True when the outcome is retryable and the budget and an untried
        candidate remain; False means this is the call's answer (or its end).

        ``call.record(status=503, headers=resp.headers)`` for a response (``outcome``
        RESPONSE, the default, needs ``status`` 100-599); ``call.record(Outcome.CONNECT_FAILED)``
        and so on otherwise (``status`` is then ignored). Of ``headers`` only
        ``endpoint-load-metrics`` (load reports) and ``retry-after`` (back-off of a 429 or 503)
        are passed to the core, names matched in any case.

        Raises :class:`InvalidArgumentError` when no attempt is open (no :meth:`next`, or
        recorded already), for an unknown outcome or a status out of 100-599;
        :class:`ClosedError` once this call was closed. A closed client gives False."""
        code = _OUTCOMES.get(outcome) if type(outcome) is not bool else None
        if code is None:
            raise InvalidArgumentError(
                Status.INVALID_ARGUMENT, f"unknown outcome {outcome!r} (expected an Outcome)"
            )
        if code == 0:
            if status is None or isinstance(status, bool):
                raise InvalidArgumentError(
                    Status.INVALID_ARGUMENT, "a RESPONSE needs its HTTP status (status=100-599)"
                )
            http_status = operator.index(status)
            if not 100 <= http_status <= 599:
                raise InvalidArgumentError(
                    Status.INVALID_ARGUMENT, f"HTTP status {http_status} is not in 100-599"
                )
        else:
            http_status = 0
        buf, n = _load_headers(headers) if headers is not None else (b"", 0)
        h = self._enter()
        try:
            retry = self._retry
            if n:
                st = lib.easpy_call_record(h, code, http_status, buf, n, retry)
            else:
                st = lib.eas_call_record(h, code, http_status, _NULL, _NULL, 0, retry)
            if st == _OK:
                return retry[0] != 0
        finally:
            self._busy.release()
        if st == _INVALID_ARGUMENT:
            raise error_for(st, "no attempt is open: record() follows next(), once per attempt")
        raise error_for(st, _status_text(st))

    def finish(self, body: Union[Body, int] = Body.DONE) -> None:
        """The recorded attempt's body is over: the attempt leaves in-flight; BROKEN counts a
        failure of its instance, DROPPED nothing. Implied (as DONE) by :meth:`next` and
        :meth:`close`; with no recorded attempt (none yet, or finished already) it does
        nothing. Raises :class:`InvalidArgumentError` for an unknown body value."""
        code = _BODIES.get(body) if type(body) is not bool else None
        if code is None:
            raise InvalidArgumentError(
                Status.INVALID_ARGUMENT, f"unknown body {body!r} (expected a Body)"
            )
        h = self._enter()
        try:
            st = lib.eas_call_finish(h, code)
        finally:
            self._busy.release()
        if st != _OK:
            raise error_for(st, _status_text(st))

    def close(self) -> None:
        """Releases the call: an attempt not recorded ends as CANCELLED, a recorded one's body
        as DONE. Idempotent; works after the client was closed. Raises :class:`RuntimeError`
        when another thread is inside a method of this call."""
        if self._h == _NULL:
            return
        if not self._busy.acquire(False):
            raise RuntimeError("easdirect.Call closed while another thread uses it")
        try:
            self._h = _NULL
            self._free()  # runs _free_call once, and drops its hold on the client
        finally:
            self._busy.release()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (or the ``with`` block ended)."""
        return self._h == _NULL

    @property
    def client(self) -> "Client":
        """The client this call belongs to."""
        return self._client

    def __enter__(self) -> "Call":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Closes the call. With an exception, a recorded attempt's body ends as DROPPED and an
        open one as CANCELLED (nothing is held against the instance)."""
        if exc_type is not None and self._h != _NULL:
            try:
                self.finish(Body.DROPPED)
            except RuntimeError:
                pass
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._h == _NULL else "open"
        return f"<easdirect.Call of {self._client.target} {state}>"


def _status_text(status: int) -> str:
    return str(ffi.string(lib.eas_status_str(int(status))).decode())

