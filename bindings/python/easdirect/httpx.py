"""``httpx`` transports (sync and async) that send requests for a service to its instances.

    import httpx, easdirect, easdirect.httpx
    client = easdirect.Client("eas://1.2.3.4:8080/my_service")
    with httpx.Client(transport=easdirect.httpx.Transport(client)) as http:
        http.post("http://my_service/api/predict/my_service", content=b"...")

    async with httpx.AsyncClient(transport=easdirect.httpx.AsyncTransport(client)) as http:
        await http.post("http://my_service/api/predict/my_service", content=b"...")

Requests to other hosts go to the wrapped transport (``httpx.HTTPTransport()`` by default)
untouched. See :mod:`easdirect._http` for the retry and reporting policy (DESIGN.md's "HTTP
helpers"). Each attempt is sent with ``Host: {instance.host}``; ``response.request`` stays the
caller's request and ``response.extensions["easdirect.instance"]`` is the instance that
answered.
"""

from __future__ import annotations

from typing import Iterable, List, Optional

import httpx as _httpx

from ._client import Client, Instance
from ._errors import NoInstanceError
from ._http import DEFAULT_MAX_ATTEMPTS, Policy, is_retryable_status

__all__ = ["AsyncTransport", "NoInstanceAvailable", "Transport"]

#: Errors after which the request is sent again on another instance: the connection failed,
#: timed out, or broke before a response.
RETRYABLE_ERRORS = (_httpx.NetworkError, _httpx.TimeoutException, _httpx.RemoteProtocolError)


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


def _attempt(request: _httpx.Request, scheme: str, inst: Instance) -> _httpx.Request:
    url = request.url.copy_with(scheme=scheme, host=inst.ip, port=inst.port)
    headers = request.headers.copy()
    headers["Host"] = inst.host
    return _httpx.Request(
        request.method, url, headers=headers, stream=request.stream, extensions=request.extensions
    )


def _tag(resp: _httpx.Response, inst: Instance) -> _httpx.Response:
    resp.extensions = {**resp.extensions, "easdirect.instance": inst}
    return resp


class _Base:
    def __init__(
        self,
        client: Client,
        aliases: Iterable[str],
        scheme: str,
        max_attempts: int,
        retry_non_idempotent: bool,
    ) -> None:
        self._policy = Policy(client, aliases, scheme, max_attempts, retry_non_idempotent)

    @property
    def client(self) -> Client:
        return self._policy.client


class Transport(_Base, _httpx.BaseTransport):
    """A sync transport: routes requests whose host is ``client.service`` (or one of
    ``aliases``) to the client's instances through ``transport`` (default
    ``httpx.HTTPTransport()``), with the policy of :mod:`easdirect._http`."""

    def __init__(
        self,
        client: Client,
        *,
        transport: Optional[_httpx.BaseTransport] = None,
        aliases: Iterable[str] = (),
        scheme: str = "http",
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_non_idempotent: bool = True,
    ) -> None:
        super().__init__(client, aliases, scheme, max_attempts, retry_non_idempotent)
        self._inner = transport if transport is not None else _httpx.HTTPTransport()

    def handle_request(self, request: _httpx.Request) -> _httpx.Response:
        policy = self._policy
        if not policy.matches(request.url.host):
            return self._inner.handle_request(request)
        client = policy.client
        attempts = policy.attempts(request.method)
        if attempts > 1:
            request.read()  # the body, in memory, is replayed on each attempt
        try:
            inst = policy.first()
        except NoInstanceError as e:
            raise NoInstanceAvailable(e, request) from None
        tried: List[int] = [inst.id]
        n = 1
        while True:
            resp: Optional[_httpx.Response] = None
            error: Optional[BaseException] = None
            try:
                resp = self._inner.handle_request(_attempt(request, policy.scheme, inst))
            except RETRYABLE_ERRORS as e:
                error = e
            if resp is not None and not is_retryable_status(resp.status_code):
                client.report_success(inst.id)
                return _tag(resp, inst)
            client.report_failure(inst.id)
            following = policy.next(tried) if n < attempts else None
            if following is None:
                if resp is not None:
                    return _tag(resp, inst)
                assert error is not None
                raise error
            if resp is not None:
                resp.close()
            inst = following
            tried.append(inst.id)
            n += 1

    def close(self) -> None:
        self._inner.close()


class AsyncTransport(_Base, _httpx.AsyncBaseTransport):
    """The async counterpart of :class:`Transport` (default inner transport
    ``httpx.AsyncHTTPTransport()``). Picks and reports are non-blocking C calls, made on the
    event loop."""

    def __init__(
        self,
        client: Client,
        *,
        transport: Optional[_httpx.AsyncBaseTransport] = None,
        aliases: Iterable[str] = (),
        scheme: str = "http",
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_non_idempotent: bool = True,
    ) -> None:
        super().__init__(client, aliases, scheme, max_attempts, retry_non_idempotent)
        self._inner = transport if transport is not None else _httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: _httpx.Request) -> _httpx.Response:
        policy = self._policy
        if not policy.matches(request.url.host):
            return await self._inner.handle_async_request(request)
        client = policy.client
        attempts = policy.attempts(request.method)
        if attempts > 1:
            await request.aread()
        try:
            inst = policy.first()
        except NoInstanceError as e:
            raise NoInstanceAvailable(e, request) from None
        tried: List[int] = [inst.id]
        n = 1
        while True:
            resp: Optional[_httpx.Response] = None
            error: Optional[BaseException] = None
            try:
                resp = await self._inner.handle_async_request(
                    _attempt(request, policy.scheme, inst)
                )
            except RETRYABLE_ERRORS as e:
                error = e
            if resp is not None and not is_retryable_status(resp.status_code):
                client.report_success(inst.id)
                return _tag(resp, inst)
            client.report_failure(inst.id)
            following = policy.next(tried) if n < attempts else None
            if following is None:
                if resp is not None:
                    return _tag(resp, inst)
                assert error is not None
                raise error
            if resp is not None:
                await resp.aclose()
            inst = following
            tried.append(inst.id)
            n += 1

    async def aclose(self) -> None:
        await self._inner.aclose()
