"""``httpx`` transports (sync and async) that send requests for a service to its instances.

    import httpx, easdirect, easdirect.httpx
    client = easdirect.Client("eas://1.2.3.4:8080/my_service")
    transport = easdirect.httpx.Transport(client, token=EAS_TOKEN, affinity_header="X-Session-Id")
    with httpx.Client(transport=transport) as http:
        http.post("http://my_service/api/predict/my_service", content=b"...")

    async with httpx.AsyncClient(transport=easdirect.httpx.AsyncTransport(client)) as http:
        await http.post("http://my_service/api/predict/my_service", content=b"...")

Each request to the service drives one call (the steps of :class:`easdirect.Call`, in C): the
library picks each attempt's instance (by load, or by affinity for a keyed request) and decides whether to try
again; the transport rewrites the URL, replays the body, and tells the call how each attempt
went. Requests to other hosts go to the wrapped transport (``httpx.HTTPTransport()`` by
default) untouched. Each attempt is sent with ``Host: {instance.host}``; ``response.request``
stays the caller's request (without the token) and ``response.extensions["easdirect.instance"]``
is the instance that answered.

An attempt stays in flight (it counts in the instance's load) until the response is read to
its end or closed: ``http.stream(...)`` and ``send(..., stream=True)`` included.
"""

from __future__ import annotations

import inspect
import operator
from typing import Any, AsyncIterator, Dict, Iterable, Iterator, Optional, Tuple

import httpx as _httpx

from ._call import Body, Outcome, next_error
from ._client import Client, Instance
from ._errors import NoInstanceError
from ._http import (
    DEFAULT_ATTEMPT_TIMEOUT,
    LOAD_FORMAT_HEADER,
    AffinityKey,
    HelperCall,
    HelperOptions,
    OneShot,
    begin,
    record,
    release,
)

__all__ = ["AsyncTransport", "NoInstanceAvailable", "Transport"]


class NoInstanceAvailable(NoInstanceError, _httpx.ConnectError):
    """No instance of the service is known (yet): both an :class:`easdirect.NoInstanceError`
    and an ``httpx.ConnectError``."""

    def __init__(self, error: NoInstanceError, request: _httpx.Request) -> None:
        Exception.__init__(self, error.message)
        self.code = error.code
        self.message = error.message
        self._request = request

    def __str__(self) -> str:
        return self.message


def _outcome_of(error: BaseException) -> Outcome:
    """What an exception of the inner transport says about the attempt."""
    if isinstance(error, (_httpx.ConnectError, _httpx.ConnectTimeout, _httpx.ProxyError)):
        return Outcome.CONNECT_FAILED  # nothing was sent (TLS failing included)
    if isinstance(error, (_httpx.ReadTimeout, _httpx.WriteTimeout)):
        return Outcome.TIMEOUT
    if isinstance(error, (_httpx.ReadError, _httpx.WriteError, _httpx.RemoteProtocolError)):
        return Outcome.RESET
    # A pool timeout, a local protocol error, a cancellation, a bug: not the instance's doing;
    # it ends the call.
    return Outcome.CANCELLED


# Exceptions of a body read that mean the instance cut it (else the caller stopped reading).
_BROKEN = (_httpx.TransportError, _httpx.DecodingError)


def _timeouts(opts: HelperOptions, request: _httpx.Request) -> Tuple[dict, Any]:
    """An attempt's ``timeout`` extension (the caller's, with connect and read at most
    ``attempt_timeout`` until the response headers came), and the caller's read timeout, which
    the attempt's extension takes once the headers came (httpcore reads it at each body read)."""
    caller = request.extensions.get("timeout")
    ext = dict(caller) if isinstance(caller, dict) else {}
    read = ext.get("read")
    ext["connect"], ext["read"] = opts.attempt_timeouts(ext.get("connect"), read)
    return ext, read


class _Body:
    """The body of a request as its attempts send it."""

    __slots__ = ("_stream", "_file", "_pos", "_one_shot")

    def __init__(self, request: _httpx.Request) -> None:
        self._stream: Any = request.stream
        self._file: Any = None
        self._pos: Any = None
        self._one_shot: Optional[OneShot] = None

    def _seekable_file(self) -> Any:
        """The file inside httpx's one-read stream, when it can be rewound (else None)."""
        inner = getattr(self._stream, "_stream", None)
        if inner is None or not hasattr(inner, "seek") or not hasattr(inner, "tell"):
            return None
        seekable = getattr(inner, "seekable", None)
        return inner if seekable is None or inspect.iscoroutinefunction(seekable) or seekable() else None

    def read(self) -> None:
        """Before the first attempt: a seekable file's position, or a one-shot body buffered."""
        if isinstance(self._stream, _httpx.ByteStream):
            return  # bytes: replayable as is
        f = self._seekable_file()
        if f is not None and not inspect.iscoroutinefunction(f.tell):
            try:
                self._pos, self._file = f.tell(), f
                return
            except (OSError, ValueError):
                pass
        self._one_shot = OneShot.read(self._stream)

    async def aread(self) -> None:
        """:meth:`read`, for an async body (an async file's ``tell`` and ``seek`` awaited)."""
        if isinstance(self._stream, _httpx.ByteStream):
            return
        f = self._seekable_file()
        if f is not None:
            try:
                pos = f.tell()
                self._pos, self._file = (await pos) if inspect.isawaitable(pos) else pos, f
                return
            except (OSError, ValueError):
                pass
        if hasattr(self._stream, "__aiter__"):
            self._one_shot = await OneShot.aread(self._stream)
        else:
            self._one_shot = OneShot.read(self._stream)

    def stream(self) -> Any:
        """The body for the next attempt."""
        if self._file is not None:
            self._file.seek(self._pos)
        return self._replay()

    async def astream(self) -> Any:
        """The body for the next attempt (async)."""
        if self._file is not None:
            done = self._file.seek(self._pos)
            if inspect.isawaitable(done):
                await done
        return self._replay()

    def _replay(self) -> Any:
        shot = self._one_shot
        if shot is not None:
            return _httpx.ByteStream(shot.prefix) if shot.complete else _Chunks(shot)
        return self._stream

    def replayable(self) -> bool:
        return self._one_shot is None or self._one_shot.replayable()


class _Chunks(_httpx.SyncByteStream, _httpx.AsyncByteStream):
    """A one-shot body longer than the replay buffer, sent once."""

    def __init__(self, shot: OneShot) -> None:
        self._shot = shot

    def __iter__(self) -> Iterator[bytes]:
        return self._shot.chunks()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._shot.achunks()


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _instance_url(url: _httpx.URL, scheme: str, inst: Instance) -> _httpx.URL:
    """``url`` with the instance's scheme, address and port, path and query kept as sent.
    ``URL.copy_with`` parses the whole URL again (several microseconds); httpx 0.28's parsed
    form (a named tuple) is built field by field instead when it is there, and the URLs made
    lately are remembered (a URL is immutable)."""
    ref = getattr(url, "_uri_reference", None)
    if type(ref) is _PARSED:
        key = (ref, scheme, inst)
        out = _urls.get(key)
        if out is not None:
            return out
        port = None if _DEFAULT_PORTS.get(scheme) == inst.port else inst.port
        out = _httpx.URL.__new__(_httpx.URL)
        # ref._replace(scheme=scheme, userinfo="", host=inst.ip, port=port), without its
        # Python frames: the fields are scheme, userinfo, host, port, path, query, fragment.
        out._uri_reference = _tuple_new(_PARSED, (scheme, "", inst.ip, port, *ref[4:]))
        if len(_urls) >= 1024:
            _urls.clear()  # a bound, not an LRU
        _urls[key] = out
        return out
    return url.copy_with(scheme=scheme, host=inst.ip, port=inst.port)


def _parsed_type() -> Optional[type]:
    """The class of httpx 0.28's parsed URL when it is the named tuple :func:`_instance_url`
    builds, else None (``URL.copy_with`` then)."""
    try:
        ref = _httpx.URL("http://h:1/p?q#f")._uri_reference
        cls = type(ref)
        fields = ("scheme", "userinfo", "host", "port", "path", "query", "fragment")
        if getattr(cls, "_fields", None) == fields and ref[4:] == ("/p", "q", "f"):
            return cls
    except Exception:  # noqa: BLE001 - another httpx
        pass
    return None


_PARSED = _parsed_type()
# (a request's parsed URL, scheme, instance) -> the attempt's URL, for the ones made lately.
_urls: Dict[Any, _httpx.URL] = {}
_tuple_new = tuple.__new__


def _attempt(
    opts: HelperOptions, request: _httpx.Request, inst: Instance, stream: Any, ext: dict
) -> _httpx.Request:
    """The request of one attempt: the instance's URL and ``Host``, the token and the
    load-report ask when the request has none, the attempt's timeouts. What
    ``httpx.Request(method, url, headers=..., stream=..., extensions=...)`` builds, with httpx
    0.28's fields set directly when they are there (its constructor normalizes each header
    again and copies the URL)."""
    url = _instance_url(request.url, opts.scheme, inst)
    extensions = dict(request.extensions)
    extensions["timeout"] = ext
    headers = request.headers
    host = inst.host.encode("ascii")
    token = opts._token
    if _FAST_FIELDS:
        # The request's (name, lower-case name, value) triples, Host first and replaced, with
        # list operations rather than a loop of Python per header.
        items = headers._list
        lower = list(map(_second, items))
        hosts = lower.count(b"host")
        if hosts == 0:
            items = [(b"Host", b"host", host), *items]
        elif hosts == 1 and lower[0] == b"host":
            items = [(b"Host", b"host", host), *items[1:]]
        else:
            items = [(b"Host", b"host", host), *[t for t in items if t[1] != b"host"]]
        if token is not None and b"authorization" not in lower:
            items.append((b"Authorization", b"authorization", token.encode("utf-8")))
        if opts.load_reports and _LOAD_FORMAT not in lower:
            items.append(_LOAD_ASK)
        new_headers = _httpx.Headers.__new__(_httpx.Headers)
        new_headers._list = items
        new_headers._encoding = None
        attempt = _httpx.Request.__new__(_httpx.Request)
        attempt.method = request.method
        attempt.url = url
        attempt.headers = new_headers
        attempt.extensions = extensions
        attempt.stream = stream
        return attempt
    raw = [(b"Host", host)]
    has_auth = has_load = False
    for k, v in headers.raw:
        lk = k.lower()
        if lk == b"host":
            continue
        if lk == b"authorization":
            has_auth = True
        elif lk == _LOAD_FORMAT:
            has_load = True
        raw.append((k, v))
    if token is not None and not has_auth:
        raw.append((b"Authorization", token.encode("utf-8")))
    if opts.load_reports and not has_load:
        raw.append((_LOAD_FORMAT, b"text"))
    return _httpx.Request(request.method, url, headers=raw, stream=stream, extensions=extensions)


def _has_fast_fields() -> bool:
    """Whether httpx's Request and Headers can be built as :func:`_attempt` does, without their
    constructors (httpx 0.28: these fields, and ``Headers._list`` of (name, lower-case name,
    value) triples); else the constructors are used."""
    try:
        h = _httpx.Headers([(b"Host", b"h"), (b"X-A", b"v")])
        r = _httpx.Request("GET", "http://h/", headers=h, stream=_httpx.ByteStream(b""))
        return (
            h._list == [(b"Host", b"host", b"h"), (b"X-A", b"x-a", b"v")]
            and h._encoding is None
            and set(vars(h)) == {"_list", "_encoding"}
            and set(vars(r)) == {"method", "url", "headers", "extensions", "stream"}
        )
    except Exception:  # noqa: BLE001 - another httpx: the constructors
        return False


_LOAD_FORMAT = LOAD_FORMAT_HEADER.encode("ascii")
_LOAD_ASK = (_LOAD_FORMAT, _LOAD_FORMAT, b"text")
_second = operator.itemgetter(1)
_DONE = Body.DONE
_LOAD_NAMES = (b"endpoint-load-metrics", b"retry-after")
_FAST_FIELDS = _has_fast_fields()
_RESPONSE = Outcome.RESPONSE


def _load_headers(headers: _httpx.Headers) -> Any:
    """The response's headers as ``record`` takes them (it passes on the two the core reads):
    httpx 0.28's triples as they are, else the two from the raw pairs."""
    if _FAST_FIELDS:
        return headers._list
    return [(k, v) for k, v in headers.raw if k.lower() in _LOAD_NAMES]


class _Tracked(_httpx.SyncByteStream):
    """A response body whose end (read to its end, cut, or closed) ends the call."""

    def __init__(self, inner: _httpx.SyncByteStream, call: HelperCall) -> None:
        self._inner = inner
        self._call: Optional[HelperCall] = call

    def _end(self, body: Body) -> None:
        call, self._call = self._call, None
        if call is not None:
            if body is not _DONE:
                call.finish(body)
            call.close()  # the body as DONE, when not finished otherwise

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._inner:
                yield chunk
        except GeneratorExit:
            self._end(Body.DROPPED)
            raise
        except BaseException as e:
            self._end(Body.BROKEN if isinstance(e, _BROKEN) else Body.DROPPED)
            raise
        self._end(Body.DONE)

    def close(self) -> None:
        self._end(Body.DROPPED)  # nothing when read to its end already
        self._inner.close()


class _AsyncTracked(_httpx.AsyncByteStream):
    """The async :class:`_Tracked`: a cancellation while reading is DROPPED. Its own iterator
    rather than an async generator (asyncio's hooks register each of those in a WeakSet), so
    a body left unread ends at :meth:`aclose` (or with the call's object, as DONE)."""

    def __init__(self, inner: _httpx.AsyncByteStream, call: HelperCall) -> None:
        self._inner = inner
        self._call: Optional[HelperCall] = call
        self._chunks: Any = None

    def _end(self, body: Body) -> None:
        call, self._call = self._call, None
        if call is not None:
            if body is not _DONE:
                call.finish(body)
            call.close()  # the body as DONE, when not finished otherwise

    def __aiter__(self) -> "_AsyncTracked":
        self._chunks = self._inner.__aiter__()
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            self._end(_DONE)
            raise
        except BaseException as e:
            self._end(Body.BROKEN if isinstance(e, _BROKEN) else Body.DROPPED)
            raise

    async def aclose(self) -> None:
        self._end(Body.DROPPED)
        await self._inner.aclose()


def _answer(resp: _httpx.Response, inst: Instance) -> _httpx.Response:
    resp.extensions = {**resp.extensions, "easdirect.instance": inst}
    return resp


class _Base:
    """What both transports share: the options and the start of a call."""

    def __init__(self, owner: str, client: Client, **options: Any) -> None:
        self._options = HelperOptions(client, owner=owner, **options)
        # The caller's timeout extension (as items) -> what _timeouts makes of it.
        self._timeouts: Dict[Any, Tuple[dict, Any]] = {}

    @property
    def client(self) -> Client:
        """The client whose instances serve the requests."""
        return self._options.client

    def __repr__(self) -> str:
        return f"<easdirect.httpx.{type(self).__name__} {self._options!r}>"

    def _begin(self, request: _httpx.Request) -> Tuple[HelperCall, Instance, dict, Any]:
        """The request's call, its first instance, and the attempts' timeouts (see
        :func:`_timeouts`)."""
        opts = self._options
        headers = request.headers
        key = opts.key_of(request, lambda name: _raw_header(headers, name)) if opts.keyed else None
        caller = request.extensions.get("timeout")
        known = self._timeouts
        try:
            timeouts = known.get(tuple(caller.items()) if type(caller) is dict else caller)
        except TypeError:  # not hashable: not remembered
            timeouts = _timeouts(opts, request)
        if timeouts is None:
            timeouts = _timeouts(opts, request)
            if len(known) >= 64:
                known.clear()  # a bound, not an LRU: a client's timeouts are few
            known[tuple(caller.items()) if type(caller) is dict else caller] = timeouts
        call, inst = begin(
            opts,
            key,
            not opts.idempotent_retries_only or opts.idempotent(request.method, headers),
        )
        if type(inst) is int:
            release(call)
            e = next_error(inst)
            if isinstance(e, NoInstanceError):
                raise NoInstanceAvailable(e, request) from None
            raise e
        return call, inst, timeouts[0], timeouts[1]


def _raw_header(headers: _httpx.Headers, name: str) -> Optional[bytes]:
    """The value of header ``name`` as sent (bytes), or None."""
    want = name.lower().encode("ascii", "replace")
    for k, v in headers.raw:
        if k.lower() == want:
            return v
    return None


class Transport(_Base, _httpx.BaseTransport):
    """A sync transport: routes requests whose host is ``client.service`` (or one of
    ``aliases``; port ignored, any case, ``_`` and ``-`` alike) to the client's instances
    through ``transport`` (default ``httpx.HTTPTransport()``), one :class:`easdirect.Call` per
    request.

    Options (the same in :mod:`easdirect.requests`): ``scheme`` (``"http"`` or ``"https"``),
    ``token`` (the EAS service token, sent as ``Authorization`` when the request has none;
    never printed), ``load_reports`` (default True: ask for a load report and pass it to the
    library), ``attempt_timeout`` (seconds to the response headers of each attempt, default
    60, at most the request's own connect and read timeouts; None for none),
    ``idempotent_retries_only`` (default False; True: only GET, HEAD, OPTIONS, PUT, DELETE and
    requests with ``Idempotency-Key`` are retried after something was sent),
    ``affinity_header`` (a header whose value is the affinity key) or ``affinity_key`` (a
    function from the ``httpx.Request`` to the key), ``aliases``, ``max_attempts`` (a cap on
    top of the client's ``max_attempts`` option), ``retry_non_idempotent`` (deprecated).

    After the last attempt without a response the caller gets its exception
    (``httpx.TimeoutException``, ``httpx.TransportError``); with no instance at all
    :class:`NoInstanceAvailable`. A response received is never turned into an error."""

    def __init__(
        self,
        client: Client,
        *,
        transport: Optional[_httpx.BaseTransport] = None,
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
    ) -> None:
        super().__init__(
            "easdirect.httpx.Transport",
            client,
            scheme=scheme,
            token=token,
            load_reports=load_reports,
            attempt_timeout=attempt_timeout,
            idempotent_retries_only=idempotent_retries_only,
            affinity_header=affinity_header,
            affinity_key=affinity_key,
            aliases=aliases,
            max_attempts=max_attempts,
            retry_non_idempotent=retry_non_idempotent,
        )
        self._inner = transport if transport is not None else _httpx.HTTPTransport()

    def handle_request(self, request: _httpx.Request) -> _httpx.Response:
        opts = self._options
        if not opts.matches(request.url.host):
            return self._inner.handle_request(request)
        call, inst, timeouts, caller_read = self._begin(request)
        if isinstance(request.stream, _httpx.ByteStream):
            body: Optional[_Body] = None  # bytes: sent as they are by every attempt
        else:
            try:
                body = _Body(request)
                body.read()
            except BaseException:
                release(call)
                raise
        n = 1
        while True:
            ext = dict(timeouts)
            try:
                stream = request.stream if body is None else body.stream()
                resp = self._inner.handle_request(_attempt(opts, request, inst, stream, ext))
            except BaseException as e:
                if (
                    record(call, _outcome_of(e))
                    and (body is None or body.replayable())
                    and opts.may_retry(n)
                ):
                    following = call.next()
                    if type(following) is int:  # the client closed meanwhile, or the list changed
                        release(call)
                        raise e from None
                    inst = following
                    n += 1
                    continue
                release(call)
                raise
            ext["read"] = caller_read  # the headers came: the body with the caller's timeout
            retry = call.record(_RESPONSE, resp.status_code or 0, _load_headers(resp.headers))
            if retry is True and (body is None or body.replayable()) and opts.may_retry(n):
                following = call.next()
                if type(following) is not int:  # else the client closed: this is the answer
                    _drain(resp)
                    inst = following
                    n += 1
                    continue
            resp.stream = _Tracked(resp.stream, call)  # type: ignore[arg-type]
            return _answer(resp, inst)

    def close(self) -> None:
        self._inner.close()


def _drain(resp: _httpx.Response) -> None:
    try:
        resp.read()
    except Exception:  # noqa: BLE001 - nothing of it reaches the caller
        pass
    resp.close()


async def _adrain(resp: _httpx.Response) -> None:
    try:
        await resp.aread()
    except Exception:  # noqa: BLE001 - nothing of it reaches the caller
        pass
    await resp.aclose()


class AsyncTransport(_Base, _httpx.AsyncBaseTransport):
    """The async counterpart of :class:`Transport` (default inner transport
    ``httpx.AsyncHTTPTransport()``), with the same options. The library's calls never block:
    they run on the event loop. A cancelled task (``asyncio.CancelledError``) ends its call
    as CANCELLED: no retry, nothing counted against the instance."""

    def __init__(
        self,
        client: Client,
        *,
        transport: Optional[_httpx.AsyncBaseTransport] = None,
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
    ) -> None:
        super().__init__(
            "easdirect.httpx.AsyncTransport",
            client,
            scheme=scheme,
            token=token,
            load_reports=load_reports,
            attempt_timeout=attempt_timeout,
            idempotent_retries_only=idempotent_retries_only,
            affinity_header=affinity_header,
            affinity_key=affinity_key,
            aliases=aliases,
            max_attempts=max_attempts,
            retry_non_idempotent=retry_non_idempotent,
        )
        self._inner = transport if transport is not None else _httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: _httpx.Request) -> _httpx.Response:
        opts = self._options
        if not opts.matches(request.url.host):
            return await self._inner.handle_async_request(request)
        call, inst, timeouts, caller_read = self._begin(request)
        if isinstance(request.stream, _httpx.ByteStream):
            body: Optional[_Body] = None  # bytes: sent as they are by every attempt
        else:
            try:
                body = _Body(request)
                await body.aread()
            except BaseException:
                release(call)
                raise
        n = 1
        while True:
            ext = dict(timeouts)
            try:
                stream = request.stream if body is None else await body.astream()
                resp = await self._inner.handle_async_request(
                    _attempt(opts, request, inst, stream, ext)
                )
            except BaseException as e:
                if (
                    record(call, _outcome_of(e))
                    and (body is None or body.replayable())
                    and opts.may_retry(n)
                ):
                    following = call.next()
                    if type(following) is int:
                        release(call)
                        raise e from None
                    inst = following
                    n += 1
                    continue
                release(call)
                raise
            ext["read"] = caller_read  # the headers came: the body with the caller's timeout
            retry = call.record(_RESPONSE, resp.status_code or 0, _load_headers(resp.headers))
            if retry is True and (body is None or body.replayable()) and opts.may_retry(n):
                following = call.next()
                if type(following) is not int:
                    await _adrain(resp)
                    inst = following
                    n += 1
                    continue
            resp.stream = _AsyncTracked(resp.stream, call)  # type: ignore[arg-type]
            return _answer(resp, inst)

    async def aclose(self) -> None:
        await self._inner.aclose()
