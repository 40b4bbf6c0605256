"""A ``requests`` transport adapter that sends requests for a service to its instances.

    import requests, easdirect, easdirect.requests
    client = easdirect.Client("eas://1.2.3.4:8080/my_service")
    session = requests.Session()
    session.mount("http://", easdirect.requests.Adapter(client))
    session.post("http://my_service/api/predict/my_service", data=b"...")

Requests to other hosts pass through the adapter as through ``requests``' own. See
:mod:`easdirect._http` for the retry and reporting policy (DESIGN.md's "HTTP helpers").
The response's ``url`` and ``request`` are the ones the caller asked for (the service name);
``response.easdirect_instance`` is the instance that answered.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit, urlunsplit

import requests as _requests
from requests.adapters import HTTPAdapter
from requests.exceptions import ChunkedEncodingError, ConnectionError, Timeout
from requests.utils import should_bypass_proxies

from ._client import Client, Instance
from ._errors import NoInstanceError
from ._http import DEFAULT_MAX_ATTEMPTS, Policy, is_retryable_status

__all__ = ["Adapter", "NoInstanceAvailable", "session"]


class NoInstanceAvailable(NoInstanceError, ConnectionError):
    """No instance of the service is known (yet): both an :class:`easdirect.NoInstanceError`
    and a ``requests.ConnectionError``."""

    def __init__(self, error: NoInstanceError, request: Any = None) -> None:
        NoInstanceError.__init__(self, error.code, error.message)
        self.request = request
        self.response = None


def _rewrite(url: str, scheme: str, inst: Instance) -> str:
    parts = urlsplit(url)
    return urlunsplit((scheme, inst.host, parts.path, parts.query, parts.fragment))


def _proxies_for(url: str, proxies: Optional[Mapping[str, str]]) -> Optional[Mapping[str, str]]:
    """The proxies for the instance URL: the session resolved them for the service name, so
    ``no_proxy`` (argument or environment) is checked again against the instance's address."""
    if proxies and should_bypass_proxies(url, no_proxy=proxies.get("no_proxy")):
        return {}
    return proxies


def _make_replayable(request: _requests.PreparedRequest) -> None:
    """Buffers a file or generator body so that it can be sent again."""
    body = request.body
    if body is None or isinstance(body, (bytes, str)):
        return
    if hasattr(body, "read"):
        data = body.read()
    elif isinstance(body, (bytearray, memoryview)):
        data = bytes(body)
    else:
        data = b"".join(c.encode("utf-8") if isinstance(c, str) else bytes(c) for c in body)
    if isinstance(data, str):
        data = data.encode("utf-8")
    request.body = data
    request.headers.pop("Transfer-Encoding", None)
    request.headers["Content-Length"] = str(len(data))


class Adapter(HTTPAdapter):
    """Routes requests whose host is ``client.service`` (or one of ``aliases``) to the client's
    instances, retrying on a different instance after a connection error, a timeout, a 5xx or a
    429 (``max_attempts`` in all, never more than the number of instances), and reporting each
    outcome to the client. Other keyword arguments go to ``requests.adapters.HTTPAdapter``
    (``pool_connections``, ``pool_maxsize``...)."""

    def __init__(
        self,
        client: Client,
        *,
        aliases: Iterable[str] = (),
        scheme: str = "http",
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_non_idempotent: bool = True,
        **kwargs: Any,
    ) -> None:
        self._policy = Policy(client, aliases, scheme, max_attempts, retry_non_idempotent)
        super().__init__(**kwargs)

    @property
    def client(self) -> Client:
        return self._policy.client

    def __getstate__(self) -> Dict[str, Any]:  # HTTPAdapter pickles __attrs__ only
        raise TypeError("easdirect.requests.Adapter cannot be pickled")

    def send(
        self,
        request: _requests.PreparedRequest,
        stream: bool = False,
        timeout: Union[None, float, Tuple[float, float]] = None,
        verify: Union[bool, str] = True,
        cert: Any = None,
        proxies: Optional[Mapping[str, str]] = None,
    ) -> _requests.Response:
        policy = self._policy
        url = request.url or ""
        if not policy.matches(urlsplit(url).hostname):
            return super().send(request, stream, timeout, verify, cert, proxies)
        client = policy.client
        attempts = policy.attempts(request.method or "GET")
        if attempts > 1:
            _make_replayable(request)
        try:
            inst = policy.first()
        except NoInstanceError as e:
            raise NoInstanceAvailable(e, request) from None
        tried = [inst.id]
        n = 1
        while True:
            attempt = request.copy()
            attempt.url = _rewrite(url, policy.scheme, inst)
            resp: Optional[_requests.Response] = None
            error: Optional[BaseException] = None
            try:
                resp = super().send(
                    attempt, stream, timeout, verify, cert, _proxies_for(attempt.url, proxies)
                )
                if not stream:
                    _ = resp.content  # read here, so that a broken body counts as a failure
            except (ConnectionError, Timeout, ChunkedEncodingError) as e:
                error = e
                resp = None
            if resp is not None and not is_retryable_status(resp.status_code):
                client.report_success(inst.id)
                return self._finish(resp, request, inst)
            client.report_failure(inst.id)
            following = policy.next(tried) if n < attempts else None
            if following is None:
                if resp is not None:
                    return self._finish(resp, request, inst)
                assert error is not None
                raise error
            if resp is not None:
                resp.close()
            inst = following
            tried.append(inst.id)
            n += 1

    @staticmethod
    def _finish(
        resp: _requests.Response, request: _requests.PreparedRequest, inst: Instance
    ) -> _requests.Response:
        resp.url = request.url or resp.url
        resp.request = request
        resp.easdirect_instance = inst  # type: ignore[attr-defined]
        return resp


def session(client: Client, **adapter_options: Any) -> _requests.Session:
    """A ``requests.Session`` with an :class:`Adapter` for ``client`` mounted on ``http://``
    and ``https://`` (other hosts pass through)."""
    s = _requests.Session()
    adapter = Adapter(client, **adapter_options)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s
