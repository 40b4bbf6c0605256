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

Memory: the native call is freed by :meth:`Call.close` (or ``with``), else by a weakref callback
once the Call is unreachable (what ``weakref.finalize`` does, for less: a call is made per
request). The entry that callback frees holds the client, so the native client is never freed
while one of its calls exists (``eas_call_free`` must come first), whatever order the cyclic
collector finalizes a cycle in: it runs weakref callbacks before any ``__del__``. Not at
interpreter exit: a daemon thread may still be inside a method then, and the process is ending.
"""

from __future__ import annotations

import enum
import operator
import threading
import weakref
from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Protocol,
    Tuple,
    Union,
)

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
_INST_OFFSET = ffi.offsetof("easpy_call", "inst")
_easpy_call_begin = lib.easpy_call_begin
_easpy_call_next = lib.easpy_call_next
_easpy_call_record = lib.easpy_call_record
_easpy_call_finish = lib.easpy_call_finish
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


def _load_headers(headers: Headers) -> Tuple[bytes, int]:
    """The ``endpoint-load-metrics`` and ``retry-after`` lines of ``headers`` (names matched
    case-insensitively; str or bytes) as ``easpy_call_record`` takes them: a buffer of
    NUL-terminated names and values, and their count. NULs inside a value (never legal) are
    dropped rather than cutting the buffer's pairs."""
    items = headers.items() if hasattr(headers, "items") else headers
    parts: List[str] = []
    for name, value in items:
        if type(name) is not str:
            if not isinstance(name, (bytes, bytearray)):
                continue
            name = bytes(name).decode("latin-1")
        key = name.lower()
        if key not in _LOAD_HEADERS:
            continue
        if len(parts) == 2 * _MAX_HEADERS:
            break
        if type(value) is not str:
            if isinstance(value, (bytes, bytearray)):
                value = bytes(value).decode("latin-1")
            else:
                value = str(value)
        if "\0" in value:
            value = value.replace("\0", "")
        parts.append(key)
        parts.append(value)
    if not parts:
        return b"", 0
    parts.append("")
    return "\0".join(parts).encode("utf-8", "replace"), len(parts) // 2


def key_bytes(key: Union[bytes, bytearray, memoryview, str, None]) -> Optional[bytes]:
    """A call's affinity key as the library takes it: bytes (a str as UTF-8), None for none (an
    empty key is no key). Raises :class:`InvalidArgumentError` for a str with a lone surrogate,
    :class:`TypeError` for another type."""
    if key is None:
        return None
    if isinstance(key, str):
        try:
            kb = key.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgumentError(
                Status.INVALID_ARGUMENT,
                "the call's key is not valid Unicode (a lone surrogate)",
            ) from None
    elif isinstance(key, (bytes, bytearray, memoryview)):
        kb = bytes(key)
    else:
        raise TypeError(f"key must be bytes, str or None, got {type(key).__name__}")
    return kb or None


# id(weakref) -> (that weakref to a Call, its client, its easpy_call), for each call not freed
# yet. It keeps the weakrefs alive (so that their callbacks run), the clients, and the memory.
_unfreed: Dict[int, Tuple[Any, "Client", Tuple[Any, int]]] = {}
# easpy_call allocations whose call was freed, with the address of their ``inst``, for the next
# calls to reuse (a call is made per request); list.append and list.pop are atomic under the GIL.
_spare: List[Tuple[Any, int]] = []
_SPARE_MAX = 256
_easpy_call_free = lib.easpy_call_free


def _new_state() -> Tuple[Any, int]:
    """A spare easpy_call, or a new one: (the cdata, the address of its ``inst``)."""
    try:
        return _spare.pop()
    except IndexError:
        s = ffi.new("easpy_call *")
        return s, int(ffi.cast("uintptr_t", s)) + _INST_OFFSET


def _free_call(key: int) -> None:
    """Frees the native call registered under ``key``, once (``dict.pop`` is atomic under the
    GIL); then the entry's hold on the client ends."""
    entry = _unfreed.pop(key, None)
    if entry is not None:
        state = entry[2]
        _easpy_call_free(state[0])  # sets its call to NULL: nothing can reach it any more
        if len(_spare) < _SPARE_MAX:
            _spare.append(state)


def _collected(ref: Any) -> None:
    """The weakref callback of a Call that became unreachable without :meth:`Call.close`."""
    _free_call(id(ref))


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

    __slots__ = ("_client", "_s", "_outv", "_busy", "_key", "__weakref__")

    def __init__(
        self,
        client: "Client",
        key: Union[bytes, bytearray, memoryview, str, None],
        idempotent: bool,
    ) -> None:
        """Use :meth:`Client.call`."""
        self._s: Any = None  # the easpy_call; None once closed
        kb = key_bytes(key)
        ckey, klen = (_NULL, 0) if kb is None else (kb, len(kb))
        # Everything that can fail is made first: once eas_call_begin succeeded, nothing but
        # the registration stands between the native call and the callback that frees it.
        self._client = client
        state = _new_state()
        s, self._outv = state  # the easpy_call, and &s->inst
        self._busy = threading.Lock()
        ref = weakref.ref(self, _collected)
        self._key = id(ref)
        st = _easpy_call_begin(client._h, ckey, klen, 0 if idempotent else _NOT_IDEMPOTENT, s)
        if st != _OK:
            _spare.append(state)
            raise begin_error(st)
        _unfreed[self._key] = (ref, client, state)
        self._s = s

    def _enter(self) -> Any:
        """Takes the call for one method; its easpy_call, or ClosedError once closed."""
        if not self._busy.acquire(False):
            raise RuntimeError("easdirect.Call used from two threads at once")
        s = self._s
        if s is None:
            self._busy.release()
            raise ClosedError(Status.CLOSED, "the call is closed")
        return s

    def next(self) -> "Instance":
        """The instance for the next attempt, among those this call has not tried; it is in
        flight from now. An attempt still open (no :meth:`record`) ends as CANCELLED first,
        which ends the call; a recorded one's body is taken as DONE.

        Raises :class:`NoInstanceError` when the attempt budget (``max_attempts``) is spent,
        no untried instance is left, or the last outcome ended the call (a final answer, a
        CANCELLED); :class:`ClosedError` after the client (or this call) was closed."""
        s = self._enter()
        try:
            st = _easpy_call_next(s)
            if st == _OK:
                return _instance(self._client._cache, self._outv)
        finally:
            self._busy.release()
        raise next_error(st)

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
        s = self._enter()
        try:
            st = _easpy_call_record(s, code, http_status, buf, n)
            if st == _OK:
                return s.retry != 0
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
        s = self._enter()
        try:
            st = _easpy_call_finish(s, code)
        finally:
            self._busy.release()
        if st != _OK:
            raise error_for(st, _status_text(st))

    def close(self) -> None:
        """Releases the call: an attempt not recorded ends as CANCELLED, a recorded one's body
        as DONE. Idempotent; works after the client was closed. Raises :class:`RuntimeError`
        when another thread is inside a method of this call."""
        if self._s is None:
            return
        if not self._busy.acquire(False):
            raise RuntimeError("easdirect.Call closed while another thread uses it")
        try:
            self._s = None
            _free_call(self._key)
        finally:
            self._busy.release()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (or the ``with`` block ended)."""
        return self._s is None

    @property
    def client(self) -> "Client":
        """The client this call belongs to."""
        return self._client

    def __enter__(self) -> "Call":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Closes the call. With an exception, a recorded attempt's body ends as DROPPED and an
        open one as CANCELLED (nothing is held against the instance)."""
        if exc_type is not None and self._s is not None:
            try:
                self.finish(Body.DROPPED)
            except RuntimeError:
                pass
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._s is None else "open"
        return f"<easdirect.Call of {self._client.target} {state}>"


def begin_error(status: int) -> Exception:
    """The error of a failed ``eas_call_begin``."""
    return error_for(status, "the client is closed" if status == _CLOSED else _status_text(status))


def next_error(status: int) -> Exception:
    """The error of a failed ``eas_call_next``."""
    if status == _NO_INSTANCE:
        return error_for(
            status,
            "no instance for another attempt: the attempt budget is spent, every candidate "
            "was tried, or the last outcome ended the call",
        )
    return begin_error(status)


def _status_text(status: int) -> str:
    return str(ffi.string(lib.eas_status_str(int(status))).decode())

