"""What the HTTP helpers share (DESIGN.md, "HTTP helpers in the bindings"): the options, host
matching, the request's call key and idempotency, the headers an attempt gets, and replay of a
body that reads once. The decisions (which instance, whether to retry, what an outcome means)
are the core's: each request drives one call (the library's ``eas_call``, through
``_fastpick.Call``: the steps of :class:`easdirect.Call` in C), and a helper only carries the
facts of each attempt to it.
"""

from __future__ import annotations

import math
import warnings
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Tuple,
    Union,
)

from ._call import Body, Outcome, begin_error, key_bytes
from ._client import Client
from ._fastpick import Call as HelperCall
from ._fastpick import call_start as _call_start
from ._native import lib

__all__ = ["AffinityKey", "HelperCall", "HelperOptions", "IDEMPOTENT_METHODS", "REPLAY_LIMIT"]

_NOT_IDEMPOTENT = int(lib.EAS_CALL_NOT_IDEMPOTENT)
_DONE = Body.DONE

#: The methods that stay retryable with ``idempotent_retries_only=True`` (as does a request
#: carrying an ``Idempotency-Key`` header).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

#: Default time to response headers of one attempt, in seconds.
DEFAULT_ATTEMPT_TIMEOUT = 60.0

#: A body that reads once (a generator, a pipe) is buffered up to this many bytes, so that a
#: retry sends it whole; a longer one is sent once, as it is read, and gets no retry after it
#: was read (the caller gets the last response or error).
REPLAY_LIMIT = 1 << 20

#: The response headers the core reads.
LOAD_HEADERS = ("endpoint-load-metrics", "retry-after")

#: The request header that asks an instance for a load report, and its value.
LOAD_FORMAT_HEADER = "endpoint-load-metrics-format"

#: A function from the helper's request (a ``requests.PreparedRequest`` or an
#: ``httpx.Request``) to the call's affinity key: bytes, a str (taken as UTF-8), or None.
AffinityKey = Callable[[Any], Union[bytes, str, None]]


def _name(host: str) -> str:
    """A host as matched: lower case, ``_`` and ``-`` alike, no trailing dot."""
    return host.lower().replace("_", "-").rstrip(".")


class HelperOptions:
    """The options of one helper (the same in ``requests`` and ``httpx``), checked once."""

    __slots__ = (
        "client",
        "names",
        "scheme",
        "_token",
        "load_reports",
        "attempt_timeout",
        "idempotent_retries_only",
        "affinity_header",
        "affinity_key",
        "max_attempts",
        "keyed",
        "default_timeouts",
        "_seen",
    )

    def __init__(
        self,
        client: Client,
        *,
        scheme: str = "http",
        token: Optional[str] = None,
        load_reports: bool = True,
        attempt_timeout: Optional[float] = DEFAULT_ATTEMPT_TIMEOUT,
        idempotent_retries_only: bool = False,
        affinity_header: Optional[str] = None,
        affinity_key: Optional[AffinityKey] = None,
        aliases: Iterable[str] = (),
        max_attempts: Optional[int] = None,
        retry_non_idempotent: Optional[bool] = None,
        owner: str = "helper",
    ) -> None:
        if not isinstance(client, Client):
            raise TypeError(f"client must be an easdirect.Client, got {type(client).__name__}")
        if isinstance(aliases, str):
            aliases = (aliases,)
        names = set()
        for a in aliases:
            if not isinstance(a, str) or not a:
                raise TypeError(f"aliases must be non-empty host names (str), got {a!r}")
            names.add(_name(a))
        if client.service:
            names.add(_name(client.service))
        if not names:
            raise ValueError(
                "the client's target names no service (static://, or a source): give "
                "aliases=[...] with the host name(s) to route through it"
            )
        if scheme not in ("http", "https"):
            raise ValueError(f"scheme must be 'http' or 'https', not {scheme!r}")
        if token is not None:
            if not isinstance(token, str):
                raise TypeError(f"token must be a str, got {type(token).__name__}")
            if not token or any(c in token for c in "\r\n\0"):
                # The value itself is never printed.
                raise ValueError("token must be a non-empty str without CR, LF or NUL")
        if attempt_timeout is not None:
            if isinstance(attempt_timeout, bool) or not isinstance(attempt_timeout, (int, float)):
                raise TypeError("attempt_timeout must be a number of seconds or None")
            if not attempt_timeout > 0 or math.isnan(attempt_timeout):
                raise ValueError(f"attempt_timeout must be > 0 seconds, not {attempt_timeout!r}")
            if math.isinf(attempt_timeout):
                attempt_timeout = None
        if affinity_header is not None:
            if not isinstance(affinity_header, str) or not affinity_header:
                raise TypeError("affinity_header must be a header name (a non-empty str)")
            if affinity_key is not None:
                raise ValueError("give affinity_header or affinity_key, not both")
        if affinity_key is not None and not callable(affinity_key):
            raise TypeError("affinity_key must be a function of the request")
        if max_attempts is not None:
            if int(max_attempts) < 1:
                raise ValueError("max_attempts must be at least 1")
            max_attempts = int(max_attempts)
        if retry_non_idempotent is not None:
            warnings.warn(
                f"{owner}: retry_non_idempotent is deprecated; use "
                f"idempotent_retries_only={not retry_non_idempotent}",
                DeprecationWarning,
                stacklevel=3,
            )
            idempotent_retries_only = not retry_non_idempotent
        self.client = client
        self.names = frozenset(names)
        self.scheme = scheme
        self._token = token
        self.load_reports = bool(load_reports)
        self.attempt_timeout: Optional[float] = (
            None if attempt_timeout is None else float(attempt_timeout)
        )
        self.idempotent_retries_only = bool(idempotent_retries_only)
        self.affinity_header = affinity_header
        self.affinity_key = affinity_key
        self.max_attempts: Optional[int] = max_attempts
        #: Whether a request may carry an affinity key (else every call is unkeyed).
        self.keyed = affinity_key is not None or affinity_header is not None
        #: The attempt's (connect, read) timeouts when the caller gives none.
        self.default_timeouts = self.attempt_timeouts(None, None)
        self._seen: Dict[str, bool] = {}  # host -> matches, for the hosts met lately

    @property
    def token(self) -> Optional[str]:
        return self._token

    def __repr__(self) -> str:
        parts = [f"client={self.client.target!r}", f"scheme={self.scheme!r}"]
        if self._token is not None:
            parts.append("token=<set>")
        if not self.load_reports:
            parts.append("load_reports=False")
        parts.append(f"attempt_timeout={self.attempt_timeout!r}")
        if self.idempotent_retries_only:
            parts.append("idempotent_retries_only=True")
        if self.affinity_header:
            parts.append(f"affinity_header={self.affinity_header!r}")
        if self.affinity_key is not None:
            parts.append("affinity_key=<function>")
        if self.max_attempts is not None:
            parts.append(f"max_attempts={self.max_attempts}")
        parts.append(f"names={sorted(self.names)!r}")
        return ", ".join(parts)

    def matches(self, host: Optional[str]) -> bool:
        """True when a request to ``host`` (no port) goes through the client."""
        if not host:
            return False
        hit = self._seen.get(host)
        if hit is None:
            hit = _name(host) in self.names
            if len(self._seen) >= 1024:
                self._seen.clear()  # a bound, not an LRU: hosts are few in practice
            self._seen[host] = hit
        return hit

    def idempotent(self, method: str, headers: Any) -> bool:
        """Whether the request's call may retry after something was sent."""
        if not self.idempotent_retries_only:
            return True
        return method.upper() in IDEMPOTENT_METHODS or "idempotency-key" in headers

    def add_headers(self, headers: Any) -> None:
        """The token as ``Authorization`` when the request has none, and the load-report ask
        (``headers``: a case-insensitive mapping, changed in place)."""
        if self._token is not None and "authorization" not in headers:
            headers["Authorization"] = self._token
        if self.load_reports and LOAD_FORMAT_HEADER not in headers:
            headers[LOAD_FORMAT_HEADER] = "text"

    def key_of(self, request: Any, header: Callable[[str], Union[bytes, str, None]]) -> Any:
        """The call's affinity key: ``affinity_key(request)``, or the value of
        ``affinity_header`` (``header(name)`` reads it from the request)."""
        if self.affinity_key is not None:
            return self.affinity_key(request)
        if self.affinity_header is not None:
            return header(self.affinity_header)
        return None

    def attempt_timeouts(
        self, connect: Optional[float], read: Optional[float]
    ) -> Tuple[Optional[float], Optional[float]]:
        """The connect and read timeouts of one attempt: the caller's, at most
        ``attempt_timeout`` each."""
        at = self.attempt_timeout
        if at is None:
            return connect, read
        return (at if connect is None else min(connect, at), at if read is None else min(read, at))

    def may_retry(self, attempts: int) -> bool:
        """Whether the helper-level cap (``max_attempts``) allows another attempt."""
        return self.max_attempts is None or attempts < self.max_attempts


def begin(opts: HelperOptions, key: Any, idempotent: bool) -> Tuple[HelperCall, Any]:
    """Begins the call of one request and asks for its first instance (``Client.call`` and
    ``Call.next`` for a helper, in C: see ``_fastpick.c``): (the call, the Instance or, when
    ``next`` failed, its status for :func:`next_error`). Raises what ``Client.call`` raises."""
    kb = None if key is None else key_bytes(key)
    client = opts.client
    started = _call_start(client, client._hv, kb, 0 if idempotent else _NOT_IDEMPOTENT)
    if type(started) is int:
        raise begin_error(started)
    return started


def record(
    call: HelperCall,
    outcome: Outcome,
    status: Optional[int] = None,
    headers: Any = None,
) -> bool:
    """``call.record``, never raising for a response received: a failure there (the client
    closed, a status the core refuses) means no retry. ``headers``: None, a dict of lower-case
    names to values or to (name, value) pairs (``requests``' ``CaseInsensitiveDict._store``),
    or a list of (name, value) or (name, lower-case name, value) tuples (``httpx.Headers._list``);
    only the two headers the core reads are passed to it."""
    return call.record(outcome, status or 0, headers) is True


def end(call: HelperCall, body: Body) -> None:
    """Finishes the chosen response's body and releases the call; nothing it raises reaches
    the caller (the response was received)."""
    if body is not _DONE:  # close() ends a recorded attempt's body as DONE itself
        call.finish(body)
    call.close()


def release(call: HelperCall) -> None:
    """Releases a call that gave no response (an open attempt ends as CANCELLED)."""
    call.close()


def _as_bytes(chunk: Any) -> bytes:
    if isinstance(chunk, str):
        return chunk.encode("utf-8")
    return bytes(chunk)


class OneShot:
    """A request body that reads once, its first :data:`REPLAY_LIMIT` bytes buffered: each
    attempt sends it whole while it fits; a longer one is sent as it is read, and once its
    rest was read it can no longer be replayed (:meth:`replayable` says so)."""

    __slots__ = ("prefix", "_rest", "_rest_read")

    def __init__(self, prefix: bytes, rest: Optional[Any]) -> None:
        self.prefix = prefix
        self._rest = rest
        self._rest_read = False

    @classmethod
    def read(cls, chunks: Iterable[Any], limit: int = REPLAY_LIMIT) -> "OneShot":
        """Buffers ``chunks`` (bytes or str) up to ``limit`` bytes."""
        it = iter(chunks)
        buf: List[bytes] = []
        size = 0
        for chunk in it:
            b = _as_bytes(chunk)
            buf.append(b)
            size += len(b)
            if size > limit:
                return cls(b"".join(buf), it)
        return cls(b"".join(buf), None)

    @classmethod
    async def aread(cls, chunks: Any, limit: int = REPLAY_LIMIT) -> "OneShot":
        """Buffers an async iterable of bytes up to ``limit`` bytes."""
        it = chunks.__aiter__()
        buf: List[bytes] = []
        size = 0
        async for chunk in it:
            b = _as_bytes(chunk)
            buf.append(b)
            size += len(b)
            if size > limit:
                return cls(b"".join(buf), it)
        return cls(b"".join(buf), None)

    @property
    def complete(self) -> bool:
        """True when the whole body is in :attr:`prefix`."""
        return self._rest is None

    def replayable(self) -> bool:
        """True while the next attempt can send the whole body."""
        return self._rest is None or not self._rest_read

    def chunks(self) -> Iterator[bytes]:
        """The body for one attempt."""
        if self.prefix:
            yield self.prefix
        if self._rest is not None:
            self._rest_read = True
            for chunk in self._rest:
                yield _as_bytes(chunk)

    async def achunks(self) -> AsyncIterator[bytes]:
        """The body for one attempt (async)."""
        if self.prefix:
            yield self.prefix
        if self._rest is not None:
            self._rest_read = True
            async for chunk in self._rest:
                yield _as_bytes(chunk)
