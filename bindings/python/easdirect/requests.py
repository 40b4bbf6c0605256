"""A ``requests`` transport adapter that sends requests for a service to its instances.

    import easdirect, easdirect.requests
    client = easdirect.Client("eas://1.2.3.4:8080/my_service")
    session = easdirect.requests.session(client, token=EAS_TOKEN, affinity_header="X-Session-Id")
    session.post("http://my_service/api/predict/my_service", data=b"...")

Each request to the service drives one call (the steps of :class:`easdirect.Call`, in C): the
library picks each attempt's instance (by load, or by affinity for a keyed request) and decides whether to try
again; the adapter rewrites the URL, replays the body, and tells the call how each attempt went.
Requests to other hosts pass through the adapter as through ``requests``' own. The response's
``url`` and ``request`` are the ones the caller asked for (the service name, without the token);
``response.easdirect_instance`` is the instance that answered.

With ``stream=True`` the attempt stays in flight (it counts in the instance's load) until the
response is read to its end or closed; without it, ``requests`` reads the body before returning,
as always.
"""

from __future__ import annotations

import http.client
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit, urlunsplit

import requests as _requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.exceptions import ConnectionError, ConnectTimeout, ProxyError, SSLError, Timeout
from requests.utils import should_bypass_proxies
from urllib3.exceptions import ConnectTimeoutError, HTTPError, MaxRetryError
from urllib3.response import HTTPResponse
from urllib3.util.response import is_fp_closed

from ._call import Body, Outcome, next_error
from ._client import Client
from ._errors import NoInstanceError
from ._http import (
    DEFAULT_ATTEMPT_TIMEOUT,
    LOAD_FORMAT_HEADER,
    LOAD_HEADERS,
    AffinityKey,
    HelperCall,
    HelperOptions,
    OneShot,
    begin,
    end,
    record,
    release,
)

__all__ = ["Adapter", "NoInstanceAvailable", "session"]

_RESPONSE = Outcome.RESPONSE

#: A retried attempt's response is read (so that its connection is reused) up to this size;
#: a longer one is closed.
_DRAIN_LIMIT = 64 * 1024


class NoInstanceAvailable(NoInstanceError, ConnectionError):
    """No instance of the service is known (yet): both an :class:`easdirect.NoInstanceError`
    and a ``requests.ConnectionError``."""

    def __init__(self, error: NoInstanceError, request: Any = None) -> None:
        NoInstanceError.__init__(self, error.code, error.message)
        self.request = request
        self.response = None


def _proxies_for(url: str, proxies: Optional[Mapping[str, str]]) -> Optional[Mapping[str, str]]:
    """The proxies for the instance URL: the session resolved them for the service name, so
    ``no_proxy`` (argument or environment) is checked again against the instance's address."""
    if proxies and should_bypass_proxies(url, no_proxy=proxies.get("no_proxy")):
        return {}
    return proxies


def _outcome_of(error: BaseException) -> Outcome:
    """What an exception of ``HTTPAdapter.send`` says about the attempt."""
    if isinstance(error, (ConnectTimeout, SSLError, ProxyError)):
        return Outcome.CONNECT_FAILED  # nothing was sent (TLS failing included)
    if isinstance(error, Timeout):
        return Outcome.TIMEOUT
    if isinstance(error, ConnectionError):
        reason = error.args[0] if error.args else None
        if isinstance(reason, MaxRetryError):
            reason = reason.reason
        if isinstance(reason, ConnectTimeoutError):  # NewConnectionError included
            return Outcome.CONNECT_FAILED
        return Outcome.RESET
    return Outcome.CANCELLED  # not the instance's doing (an interrupt, a bug): ends the call


class _Request:
    """The body of a request as its attempts send it."""

    __slots__ = ("_body", "_pos", "_one_shot")

    def __init__(self, request: _requests.PreparedRequest) -> None:
        body = request.body
        self._body: Any = body
        self._pos: Optional[int] = None
        self._one_shot: Optional[OneShot] = None
        if body is None or isinstance(body, (bytes, str)):
            return
        if isinstance(body, (bytearray, memoryview)):
            self._body = bytes(body)
            return
        if hasattr(body, "read"):
            try:
                seekable = body.seekable() if hasattr(body, "seekable") else hasattr(body, "seek")
                if seekable:
                    self._pos = body.tell()
                    return
            except (OSError, ValueError):
                pass
            shot = OneShot.read(iter(lambda: body.read(65536), b""))
        else:
            shot = OneShot.read(body)
        if shot.complete:  # sent with a Content-Length from now on
            self._body = shot.prefix
            request.headers.pop("Transfer-Encoding", None)
            request.headers["Content-Length"] = str(len(shot.prefix))
        else:
            self._one_shot = shot

    def body(self) -> Any:
        """The body for the next attempt."""
        if self._pos is not None:
            self._body.seek(self._pos)
        elif self._one_shot is not None:
            return self._one_shot.chunks()
        return self._body

    def replayable(self) -> bool:
        return self._one_shot is None or self._one_shot.replayable()


def _drain(resp: _requests.Response) -> None:
    """Frees a retried attempt's response: read when short (its connection goes back to the
    pool), else closed."""
    try:
        length = int(resp.headers.get("Content-Length", "-1"))
        if 0 <= length <= _DRAIN_LIMIT:
            _ = resp.content
    except Exception:  # noqa: BLE001 - nothing of it reaches the caller
        pass
    resp.close()


# Exceptions of a body read that mean the instance cut it (else the caller stopped reading).
_BROKEN = (HTTPError, OSError, http.client.HTTPException)
_tracked_classes: Dict[type, type] = {}


def _tracked_class(base: type) -> type:
    """A subclass of urllib3's response class ``base`` whose reads and close end the call."""
    cls = _tracked_classes.get(base)
    if cls is not None:
        return cls

    base_read = base.read

    class Tracked(base):  # type: ignore[valid-type, misc]
        _easdirect_call: Optional[HelperCall]

        def _easdirect_end(self, body: Body) -> None:
            call = self.__dict__.pop("_easdirect_call", None)
            if call is not None:
                end(call, body)

        def _easdirect_after_read(self) -> None:
            if "_easdirect_call" in self.__dict__ and (
                self._fp is None or is_fp_closed(self._fp)
            ):
                self._easdirect_end(Body.DONE)

        def read(self, *args: Any, **kwargs: Any) -> bytes:
            try:
                data = base_read(self, *args, **kwargs)
            except BaseException as e:
                self._easdirect_end(Body.BROKEN if isinstance(e, _BROKEN) else Body.DROPPED)
                raise
            # _easdirect_after_read, inline (this runs on every read of every response).
            fields = self.__dict__
            if "_easdirect_call" in fields:
                fp = self._fp
                if fp is None or is_fp_closed(fp):
                    call = fields.pop("_easdirect_call", None)
                    if call is not None:
                        call.close()  # the body as DONE
            return data

        def read1(self, *args: Any, **kwargs: Any) -> bytes:
            try:
                data = super().read1(*args, **kwargs)
            except BaseException as e:
                self._easdirect_end(Body.BROKEN if isinstance(e, _BROKEN) else Body.DROPPED)
                raise
            self._easdirect_after_read()
            return data

        def read_chunked(self, *args: Any, **kwargs: Any) -> Any:
            try:
                yield from super().read_chunked(*args, **kwargs)
            except GeneratorExit:
                raise  # closed early: close() says DROPPED
            except BaseException as e:
                self._easdirect_end(Body.BROKEN if isinstance(e, _BROKEN) else Body.DROPPED)
                raise
            self._easdirect_after_read()

        def close(self) -> None:
            if "_easdirect_call" in self.__dict__:
                done = self._fp is None or is_fp_closed(self._fp)
                self._easdirect_end(Body.DONE if done else Body.DROPPED)
            super().close()

    Tracked.__name__ = Tracked.__qualname__ = f"Tracked{base.__name__}"
    _tracked_classes[base] = Tracked
    return Tracked


def _track(resp: _requests.Response, call: HelperCall) -> None:
    """Keeps ``call``'s attempt in flight until ``resp``'s body is read to its end or closed."""
    raw = resp.raw
    if raw is None or not isinstance(raw, HTTPResponse):
        end(call, Body.DONE)  # nothing to follow (a test double, say)
        return
    fp = raw._fp
    if fp is None or is_fp_closed(fp):
        end(call, Body.DONE)  # no body (HEAD, 204, Content-Length: 0)
        return
    base = type(raw)
    try:
        raw.__class__ = _tracked_classes.get(base) or _tracked_class(base)
    except TypeError:
        end(call, Body.DONE)
        return
    raw._easdirect_call = call


_TRACKED = _tracked_class(HTTPResponse)


def _attempt_of(
    request: _requests.PreparedRequest, url: str, opts: HelperOptions
) -> _requests.PreparedRequest:
    """What ``request.copy()`` gives, with the instance's URL and the headers of
    ``opts.add_headers``, for less: the cookie jar is shared, not copied (sending only reads it;
    the answer's cookies go to the response), and a ``CaseInsensitiveDict``'s store is copied
    as a whole rather than item by item."""
    attempt = _requests.PreparedRequest.__new__(_requests.PreparedRequest)
    fields = attempt.__dict__
    fields.update(request.__dict__)  # method, _cookies, hooks, _body_position (and the rest)
    fields["url"] = url
    fields["body"] = None  # the attempt's own, set by the caller
    headers = request.headers
    if type(headers) is CaseInsensitiveDict:
        copy = CaseInsensitiveDict.__new__(CaseInsensitiveDict)
        # A dict (ordered too) rather than the OrderedDict requests uses: copied and grown for
        # less; the attempt's headers are only read, by HTTPAdapter.send and urllib3.
        store = copy._store = dict(headers._store)  # type: ignore[attr-defined]
        # opts.add_headers, on the store (lower-case name -> (name, value)) directly.
        token = opts._token
        if token is not None and "authorization" not in store:
            store["authorization"] = ("Authorization", token)
        if opts.load_reports and LOAD_FORMAT_HEADER not in store:
            store[LOAD_FORMAT_HEADER] = (LOAD_FORMAT_HEADER, "text")
        fields["headers"] = copy
    else:
        fields["headers"] = copy = headers.copy()
        opts.add_headers(copy)
    return attempt


def _seconds(value: Any) -> Optional[float]:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _split_timeout(timeout: Any) -> Tuple[Optional[float], Optional[float]]:
    """The caller's connect and read timeouts (a number, a pair, or a ``urllib3.Timeout``)."""
    if isinstance(timeout, tuple):
        connect, read = timeout
        return _seconds(connect), _seconds(read)
    if isinstance(timeout, urllib3.Timeout):
        return _seconds(timeout.connect_timeout), _seconds(timeout.read_timeout)
    return _seconds(timeout), _seconds(timeout)


class Adapter(HTTPAdapter):
    """Routes requests whose host is ``client.service`` (or one of ``aliases``; the port is
    ignored, the case too, and ``_`` and ``-`` are alike) to the client's instances, one
    :class:`easdirect.Call` per request: the library picks each attempt's instance and decides
    whether to retry; the body is replayed on each attempt.

    Options (the same in :mod:`easdirect.httpx`):

    - ``scheme``: ``"http"`` (default) or ``"https"`` to the instances.
    - ``token``: the EAS service token, sent as ``Authorization`` when the request has none;
      never printed.
    - ``load_reports`` (default True): ask each instance for a load report
      (``endpoint-load-metrics-format: text``) and pass its answer to the library.
    - ``attempt_timeout`` (seconds, default 60; None for none): the read timeout to the
      response headers of each attempt, at most the caller's own ``timeout`` (and the connect
      timeout, when the caller gives none); the body is then read with the caller's timeout. A
      hung instance costs one attempt, not the whole wait.
    - ``idempotent_retries_only`` (default False: every method retries, as EAS predict calls
      are POSTs the official SDKs retry): True retries only GET, HEAD, OPTIONS, PUT, DELETE
      and requests with an ``Idempotency-Key`` header after something was sent; the others
      only when nothing was (a refused connection).
    - ``affinity_header``: a request header (``"X-Session-Id"``) whose value is the call's
      affinity key (the same key goes to the same instance), or ``affinity_key``: a function
      from the ``PreparedRequest`` to the key (bytes, str or None).
    - ``aliases``: more host names routed through the client (needed for ``static://``).
    - ``max_attempts``: a cap on the attempts of each request, on top of the client's own
      ``max_attempts`` option (3 by default), which is where to set it.
    - ``retry_non_idempotent``: deprecated; ``retry_non_idempotent=False`` is
      ``idempotent_retries_only=True``.

    Other keyword arguments go to ``requests.adapters.HTTPAdapter`` (``pool_connections``,
    ``pool_maxsize``...). After the last attempt without a response the caller gets its
    exception (``requests.Timeout``, ``requests.ConnectionError``); with no instance at all
    :class:`NoInstanceAvailable`. A response received is never turned into an error."""

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
        **kwargs: Any,
    ) -> None:
        self._options = HelperOptions(
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
            owner="easdirect.requests.Adapter",
        )
        self._prefix = self._options.scheme + "://"
        # What HTTPAdapter.send makes of the attempts' (connect, read) timeouts when the caller
        # gives none (urlopen clones it for each request).
        connect, read = self._options.default_timeouts
        self._default_timeout = urllib3.Timeout(connect=connect, read=read)
        # URL -> what follows the host in its instance URLs, or False (not the service's).
        self._tails: Dict[str, Union[str, bool]] = {}
        super().__init__(**kwargs)

    @property
    def client(self) -> Client:
        """The client whose instances serve the requests."""
        return self._options.client

    def __repr__(self) -> str:
        return f"<easdirect.requests.Adapter {self._options!r}>"

    def __getstate__(self) -> Dict[str, Any]:  # HTTPAdapter pickles __attrs__ only
        raise TypeError("easdirect.requests.Adapter cannot be pickled")

    def send(
        self,
        request: _requests.PreparedRequest,
        stream: bool = False,
        timeout: Union[None, float, Tuple[float, float], Any] = None,
        verify: Union[bool, str] = True,
        cert: Any = None,
        proxies: Optional[Mapping[str, str]] = None,
    ) -> _requests.Response:
        """Sends ``request``: through the client when its host names the service, else as
        ``HTTPAdapter.send`` does."""
        url = request.url or ""
        tail = self._tails.get(url)
        if tail is None:
            tail = self._tail_of(url)
        if tail is False:
            return super().send(request, stream, timeout, verify, cert, proxies)
        opts = self._options
        headers = request.headers
        key = opts.key_of(request, headers.get) if opts.keyed else None
        call, inst = begin(
            opts,
            key,
            not opts.idempotent_retries_only
            or opts.idempotent(request.method or "GET", headers),
        )
        if type(inst) is int:
            release(call)
            e = next_error(inst)
            if isinstance(e, NoInstanceError):
                raise NoInstanceAvailable(e, request) from None
            raise e
        raw_body = request.body
        if raw_body is None or type(raw_body) is bytes or type(raw_body) is str:
            body: Optional[_Request] = None  # sent as it is by every attempt
        else:
            try:
                body = _Request(request)
            except BaseException:
                release(call)
                raise
        if timeout is None:
            caller_read = None
            attempt_timeout = opts.default_timeouts
            sent_timeout: Any = self._default_timeout  # the same, built once
        else:
            caller_connect, caller_read = _split_timeout(timeout)
            sent_timeout = attempt_timeout = opts.attempt_timeouts(caller_connect, caller_read)
        n = 1
        while True:
            attempt = _attempt_of(request, self._prefix + inst.host + tail, opts)
            try:
                attempt.body = raw_body if body is None else body.body()
                resp = super().send(
                    attempt,
                    stream,
                    sent_timeout,
                    verify,
                    cert,
                    _proxies_for(attempt.url, proxies) if proxies else proxies,
                )
            except BaseException as e:
                retry = record(call, _outcome_of(e))
                if retry and (body is None or body.replayable()) and opts.may_retry(n):
                    following = call.next()
                    if type(following) is int:  # the client closed meanwhile, or the list changed
                        release(call)
                        raise e from None
                    inst = following
                    n += 1
                    continue
                release(call)
                raise
            got = resp.headers
            retry = call.record(
                _RESPONSE,
                resp.status_code or 0,
                got._store  # type: ignore[attr-defined]
                if type(got) is CaseInsensitiveDict
                else [(k, v) for k in LOAD_HEADERS if (v := got.get(k)) is not None],
            )
            if retry is True and (body is None or body.replayable()) and opts.may_retry(n):
                following = call.next()
                if type(following) is not int:  # else the client closed: this is the answer
                    _drain(resp)
                    inst = following
                    n += 1
                    continue
            if attempt_timeout[1] != caller_read:
                # The headers came within the attempt's timeout: the body is read with the
                # caller's.
                try:
                    sock = resp.raw.connection.sock  # type: ignore[union-attr]
                    if sock is not None:
                        sock.settimeout(caller_read)
                except Exception:  # noqa: BLE001 - best effort: the attempt timeout then stays
                    pass
            raw = resp.raw
            fp = getattr(raw, "_fp", None)
            if type(raw) is HTTPResponse and fp is not None and not is_fp_closed(fp):
                raw.__class__ = _TRACKED  # what _track does, for urllib3's class itself
                raw._easdirect_call = call
            else:
                _track(resp, call)
            resp.url = url or resp.url
            resp.request = request
            resp.easdirect_instance = inst  # type: ignore[attr-defined]
            return resp

    def _tail_of(self, url: str) -> Union[str, bool]:
        """What follows the host in an instance's URL for ``url`` (path, query, fragment, as
        ``urlunsplit`` writes them), or False when ``url`` is not for the service; remembered
        for the URLs met lately."""
        parts = urlsplit(url)
        tail: Union[str, bool] = False
        if self._options.matches(parts.hostname):
            tail = urlunsplit(("x", "h", parts.path, parts.query, parts.fragment))[len("x://h") :]
        if len(self._tails) >= 1024:
            self._tails.clear()  # a bound, not an LRU
        self._tails[url] = tail
        return tail


def session(client: Client, **adapter_options: Any) -> _requests.Session:
    """A ``requests.Session`` with an :class:`Adapter` for ``client`` mounted on ``http://``
    and ``https://`` (other hosts pass through); ``adapter_options`` are the Adapter's."""
    s = _requests.Session()
    adapter = Adapter(client, **adapter_options)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s
