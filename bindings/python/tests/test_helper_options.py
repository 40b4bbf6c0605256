"""What the case table does not cover, for each Python helper: the token never printed, option
checks, a body cut by the instance, an early close, a client closed during a streamed answer,
an affinity function, a one-shot body too long to buffer, the https scheme."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any, Callable, List

import httpx
import pytest
import requests

import easdirect
import easdirect.httpx as edh
import easdirect.requests as edr
from easdirect._http import REPLAY_LIMIT

from conftest import wait_for

URL = "http://svc/api/predict/svc"
SECRET = "tok-secret-123"
HELPERS = ["python_requests", "python_httpx", "python_httpx_async"]


@pytest.fixture
def client(emulator):
    c = easdirect.Client(emulator.target())
    c.wait_ready(5)
    yield c
    c.close()


def in_flight(client) -> int:
    return sum(s.in_flight for s in client.instance_stats())


def failures(client) -> int:
    return sum(s.failures for s in client.instance_stats())


def send(helper: str, client, method: str, url: str, **kw: Any) -> Any:
    """One request through ``helper``: (status, body bytes), or the exception raised.
    ``helper_options``: the helper's options; ``body``: bytes or a factory of a one-shot body
    (sync iterable, or async for the async helper); ``headers``."""
    opts = kw.pop("helper_options", {})
    body = kw.pop("body", None)
    headers = kw.pop("headers", None)
    if helper == "python_requests":
        with edr.session(client, **opts) as s:
            r = s.request(method, url, data=body() if callable(body) else body, headers=headers)
            return r.status_code, r.content
    if helper == "python_httpx":
        with httpx.Client(transport=edh.Transport(client, **opts), timeout=10) as http:
            content = body() if callable(body) else body
            r = http.request(method, url, content=content, headers=headers)
            return r.status_code, r.content

    async def main():
        transport = edh.AsyncTransport(client, **opts)
        async with httpx.AsyncClient(transport=transport, timeout=10) as http:
            content = body() if callable(body) else body
            r = await http.request(method, url, content=content, headers=headers)
            return r.status_code, r.content

    return asyncio.run(main())


def make_helper(helper: str, client, **opts: Any) -> Any:
    if helper == "python_requests":
        return edr.Adapter(client, **opts)
    if helper == "python_httpx":
        return edh.Transport(client, **opts)
    return edh.AsyncTransport(client, **opts)


@pytest.mark.parametrize("helper", HELPERS)
def test_token_is_never_printed(helper, client):
    h = make_helper(helper, client, token=SECRET, affinity_header="X-Session-Id")
    assert SECRET not in repr(h) and SECRET not in str(h)
    assert "token=<set>" in repr(h)
    with pytest.raises(ValueError) as ei:
        make_helper(helper, client, token=SECRET + "\n")
    assert SECRET not in str(ei.value)


@pytest.mark.parametrize("helper", HELPERS)
def test_options_are_checked(helper, client):
    with pytest.raises(ValueError, match="scheme"):
        make_helper(helper, client, scheme="ftp")
    with pytest.raises(ValueError, match="attempt_timeout"):
        make_helper(helper, client, attempt_timeout=0)
    with pytest.raises(ValueError, match="not both"):
        make_helper(helper, client, affinity_header="X-Session-Id", affinity_key=lambda r: None)
    with pytest.raises(TypeError, match="token"):
        make_helper(helper, client, token=123)
    with pytest.raises(ValueError, match="max_attempts"):
        make_helper(helper, client, max_attempts=0)
    with easdirect.Client("static://127.0.0.1:1") as c:
        with pytest.raises(ValueError, match="aliases"):
            make_helper(helper, c)
    with pytest.raises(TypeError):
        make_helper(helper, "svc")
    with pytest.warns(DeprecationWarning, match="retry_non_idempotent"):
        make_helper(helper, client, retry_non_idempotent=False)


@pytest.mark.parametrize("helper", HELPERS)
def test_other_hosts_get_no_token(helper, emulator, client):
    port = emulator.ports()[0]
    status, _ = send(helper, client, "GET", f"http://127.0.0.1:{port}/direct",
                     helper_options={"token": SECRET})
    assert status == 200
    (b,) = [b for b in emulator.backends() if b["port"] == port]
    assert b["requests"] and "authorization" not in b["requests"][-1]["headers"]
    assert "endpoint-load-metrics-format" not in b["requests"][-1]["headers"]


def truncating_server(body_sent: int, length: int) -> "tuple[int, Callable[[], None]]":
    """A server answering every request 200 with ``Content-Length: length`` and then only
    ``body_sent`` bytes before closing: a body cut by the instance."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length
                        + b"y" * body_sent
                    )
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    def close() -> None:
        stop.set()
        t.join(2)
        srv.close()

    return srv.getsockname()[1], close


@pytest.mark.parametrize("helper", HELPERS)
def test_body_cut_by_the_instance_counts_a_failure(helper):
    port, close = truncating_server(10, 100)
    try:
        with easdirect.Client(f"static://127.0.0.1:{port}") as c:
            c.wait_ready(5)
            with pytest.raises((requests.exceptions.ChunkedEncodingError, httpx.TransportError)):
                send(helper, c, "GET", "http://model/x", helper_options={"aliases": ["model"]})
            assert failures(c) == 1  # BROKEN: the instance cut it; no retry
            assert in_flight(c) == 0
    finally:
        close()


@pytest.mark.parametrize("helper", HELPERS)
def test_early_close_counts_nothing(helper, emulator):
    ports = emulator.control(
        "POST", "backends",
        {"service": "svc", "count": 1, "kind": "llm", "replace": True,
         "llm": {"base_ms": 1, "per_token_ms": 20, "tokens_sigma": 0, "mean_tokens": 50}},
    )
    with easdirect.Client(emulator.target()) as c:
        wait_for(lambda: [i.port for i in c.instances()] == [ports[0]["port"]])
        headers = {"x-stream": "true", "x-tokens": "50"}
        url = "http://svc/v1/completions"
        if helper == "python_requests":
            with edr.session(c) as s:
                r = s.post(url, data=b"{}", headers=headers, stream=True)
                assert in_flight(c) == 1
                next(r.iter_content(16))
                r.close()
        elif helper == "python_httpx":
            with httpx.Client(transport=edh.Transport(c)) as http:
                with http.stream("POST", url, content=b"{}", headers=headers) as r:
                    assert in_flight(c) == 1
                    next(r.iter_bytes())
        else:

            async def main() -> None:
                async with httpx.AsyncClient(transport=edh.AsyncTransport(c)) as http:
                    async with http.stream("POST", url, content=b"{}", headers=headers) as r:
                        assert in_flight(c) == 1
                        await r.aiter_bytes().__anext__()

            asyncio.run(main())
        assert in_flight(c) == 0
        assert failures(c) == 0  # DROPPED: not the instance's fault


@pytest.mark.parametrize("helper", HELPERS)
def test_client_closed_during_a_streamed_answer(helper, emulator):
    """The old ``report_success`` raising ClosedError: a response received stays a response."""
    ports = emulator.control(
        "POST", "backends",
        {"service": "svc", "count": 1, "kind": "llm", "replace": True,
         "llm": {"base_ms": 1, "per_token_ms": 5, "tokens_sigma": 0, "mean_tokens": 10}},
    )
    c = easdirect.Client(emulator.target())
    wait_for(lambda: [i.port for i in c.instances()] == [ports[0]["port"]])
    headers = {"x-stream": "true", "x-tokens": "10"}
    url = "http://svc/v1/completions"
    if helper == "python_requests":
        with edr.session(c) as s:
            r = s.post(url, data=b"{}", headers=headers, stream=True)
            c.close()
            body = r.content
    elif helper == "python_httpx":
        with httpx.Client(transport=edh.Transport(c)) as http:
            with http.stream("POST", url, content=b"{}", headers=headers) as r:
                c.close()
                body = r.read()
    else:

        async def main() -> bytes:
            async with httpx.AsyncClient(transport=edh.AsyncTransport(c)) as http:
                async with http.stream("POST", url, content=b"{}", headers=headers) as r:
                    c.close()
                    return await r.aread()

        body = asyncio.run(main())
    assert b"data: [DONE]" in body


@pytest.mark.parametrize("helper", HELPERS)
def test_affinity_function(helper, emulator, client):
    seen: List[Any] = []

    def key(request: Any) -> str:
        seen.append(type(request).__name__)
        return request.headers["X-User"]

    for _ in range(9):
        status, body = send(helper, client, "POST", URL, body=b"x",
                            headers={"X-User": "alice"}, helper_options={"affinity_key": key})
        assert status == 200
    assert sorted(emulator.hits().values()) == [0, 0, 9]
    assert seen == (["PreparedRequest"] if helper == "python_requests" else ["Request"]) * 9


@pytest.mark.parametrize("helper", HELPERS)
def test_one_shot_body_longer_than_the_buffer_is_sent_once(helper, emulator, client):
    for port in emulator.ports():
        emulator.set_backend(port, "status", 503)
    size = (REPLAY_LIMIT // 1000 + 2) * 1000  # just over the buffer
    chunk = b"x" * 1000

    def body():
        if helper == "python_httpx_async":

            async def agen():
                for _ in range(size // 1000):
                    yield chunk

            return agen()
        return (chunk for _ in range(size // 1000))

    status, _ = send(helper, client, "POST", URL, body=body)
    assert status == 503  # the last response: no retry with the body read
    assert sum(emulator.hits().values()) == 1
    received = [r for b in emulator.backends() for r in b["requests"]]
    assert [r["body_len"] for r in received] == [size]
    assert in_flight(client) == 0


class Recording(httpx.HTTPTransport):
    """An inner transport that notes each attempt's URL."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: List[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        return super().handle_request(request)


class AsyncRecording(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.urls: List[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        return await super().handle_async_request(request)


@pytest.mark.parametrize("helper", HELPERS)
def test_https_scheme_sends_tls_to_the_instance(helper, emulator, client):
    opts = {"scheme": "https", "attempt_timeout": 0.3}
    if helper == "python_requests":
        with pytest.raises(requests.exceptions.RequestException) as ei:
            send(helper, client, "GET", URL + "?q=1", helper_options=opts)
        urls = [ei.value.request.url]
    else:
        inner = Recording() if helper == "python_httpx" else AsyncRecording()
        with pytest.raises(httpx.TransportError):
            send(helper, client, "GET", URL + "?q=1", helper_options={**opts, "transport": inner})
        urls = inner.urls
    assert urls and all(u.startswith("https://127.0.0.1:") for u in urls), urls
    assert all(u.endswith("/api/predict/svc?q=1") for u in urls), urls
    assert failures(client) >= 1 and in_flight(client) == 0


@pytest.mark.parametrize(
    "url", ["http://svc/a/b?x=1&y=%2F", "http://svc:8080/p", "https://u:p@svc/x#f", "http://svc"]
)
@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize(
    "inst",
    [
        easdirect.Instance(1, "10.0.0.1", 80, 100, "10.0.0.1:80"),
        easdirect.Instance(2, "10.0.0.1", 443, 100, "10.0.0.1:443"),
        easdirect.Instance(3, "::1", 9000, 100, "[::1]:9000"),
    ],
)
def test_httpx_instance_url_is_what_copy_with_gives(url, scheme, inst):
    u = httpx.URL(url)
    fast = edh._instance_url(u, scheme, inst)
    want = u.copy_with(scheme=scheme, host=inst.ip, port=inst.port, username="", password="")
    assert str(fast) == str(want) and fast == want
    assert fast.raw_path == u.raw_path and fast.host == inst.ip
