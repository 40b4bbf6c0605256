"""easdirect.httpx.Transport and AsyncTransport against real local HTTP instances."""

from __future__ import annotations

import asyncio

import httpx
import pytest

import easdirect
import easdirect.httpx as edh

from conftest import wait_for
from test_requests_adapter import URL, free_ports, total_hits


@pytest.fixture
def client(emulator):
    c = easdirect.Client(emulator.target())
    c.wait_ready(5)
    yield c
    c.close()


def test_routes_to_instances(emulator, client):
    with httpx.Client(transport=edh.Transport(client)) as http:
        r = http.post(URL + "?q=1", content=b"hello")
        assert r.status_code == 200
        body = r.json()
        assert body["path"] == "/api/predict/svc?q=1" and body["body_len"] == 5
        inst = r.extensions["easdirect.instance"]
        assert body["backend"] == inst.host
        assert str(r.request.url) == URL + "?q=1"  # the caller's request
        for _ in range(5):
            http.get(URL)
    assert sum(emulator.hits().values()) == 6
    assert sum(st.in_flight for st in client.instance_stats()) == 0


def test_one_instance_answers_503_then_dies(emulator, client):
    bad = emulator.ports()[0]
    emulator.set_backend(bad, "status", 503)
    with httpx.Client(transport=edh.Transport(client)) as http:
        assert [http.post(URL, content=b"x").status_code for _ in range(30)] == [200] * 30
        assert emulator.hits()[bad] == 1
        emulator.set_backend(bad, "dead")
        assert [http.post(URL, content=b"x").status_code for _ in range(30)] == [200] * 30


def test_empty_discovery_answer_keeps_serving(emulator, client):
    failed = client.stats().refresh_failed
    emulator.set_fault("empty_list")
    wait_for(lambda: client.stats().refresh_failed >= failed + 2)
    with httpx.Client(transport=edh.Transport(client)) as http:
        assert [http.get(URL).status_code for _ in range(20)] == [200] * 20


def test_4xx_is_returned_at_once(emulator, client):
    for port in emulator.ports():
        emulator.set_backend(port, "status", 403)
    with httpx.Client(transport=edh.Transport(client)) as http:
        assert http.post(URL, content=b"x").status_code == 403
    assert total_hits(emulator) == 1 and client.stats().ejected == 0


def test_three_attempts_and_streamed_body_replayed(emulator):
    emulator.add_backends("svc", 2)
    ports = emulator.ports()
    for port in ports[:4]:
        emulator.set_backend(port, "status", 500)
    with easdirect.Client(emulator.target(max_ejection_percent=0, max_attempts=5)) as c:
        c.wait_ready(5)
        wait_for(lambda: len(c.instances()) == 5)
        with httpx.Client(transport=edh.Transport(c)) as http:
            r = http.post(URL, content=iter([b"ab", b"cde"]))
            assert r.status_code == 200 and r.json()["body_len"] == 5
        before = total_hits(emulator)
        emulator.set_backend(ports[4], "status", 500)
        with httpx.Client(transport=edh.Transport(c, max_attempts=3)) as http:
            assert http.post(URL, content=b"x").status_code == 500
        assert total_hits(emulator) - before == 3  # the helper's cap on the client's 5


def test_timeouts_and_connection_errors(emulator, client):
    slow = emulator.ports()[0]
    emulator.set_backend(slow, "hang")
    with httpx.Client(transport=edh.Transport(client), timeout=0.3) as http:
        assert [http.get(URL).status_code for _ in range(6)] == [200] * 6
    target = "static://" + ",".join(f"127.0.0.1:{p}" for p in free_ports(2))
    with easdirect.Client(target) as c:
        with httpx.Client(transport=edh.Transport(c, aliases=["model"])) as http:
            with pytest.raises(httpx.ConnectError):
                http.get("http://model/x")


def test_non_idempotent_not_retried_when_disabled(emulator, client):
    for port in emulator.ports():
        emulator.set_backend(port, "status", 503)
    with httpx.Client(transport=edh.Transport(client, idempotent_retries_only=True)) as http:
        assert http.post(URL, content=b"x").status_code == 503
        assert total_hits(emulator) == 1
        assert http.delete(URL).status_code == 503
        assert total_hits(emulator) == 1 + 3


def test_other_hosts_pass_through_and_no_instance(emulator, client):
    port = emulator.ports()[0]
    with httpx.Client(transport=edh.Transport(client)) as http:
        r = http.get(f"http://127.0.0.1:{port}/direct")
        assert r.json()["path"] == "/direct" and "easdirect.instance" not in r.extensions
    with easdirect.Client(emulator.target("nothing_here", request_timeout_ms=200)) as c:
        with httpx.Client(transport=edh.Transport(c)) as http:
            with pytest.raises(edh.NoInstanceAvailable) as ei:
                http.get("http://nothing_here/x")
    assert isinstance(ei.value, httpx.ConnectError)
    assert isinstance(ei.value, easdirect.NoInstanceError)


def test_async_transport(emulator, client):
    bad = emulator.ports()[0]

    async def main():
        async with httpx.AsyncClient(transport=edh.AsyncTransport(client)) as http:
            r = await http.post(URL + "?a=b", content=b"hey")
            assert r.status_code == 200 and r.json()["path"] == "/api/predict/svc?a=b"
            emulator.set_backend(bad, "status", 503)
            results = await asyncio.gather(*(http.post(URL, content=b"x") for _ in range(30)))
            assert [r.status_code for r in results] == [200] * 30
            emulator.set_backend(bad, "dead")
            results = await asyncio.gather(*(http.post(URL, content=b"x") for _ in range(30)))
            assert [r.status_code for r in results] == [200] * 30
            for port in emulator.ports():
                emulator.set_backend(port, "status", 404) if port != bad else None
            before = total_hits(emulator)
            r = await http.get(URL)
            assert r.status_code == 404 and total_hits(emulator) - before == 1

    asyncio.run(main())


def test_async_no_instance(emulator):
    async def main():
        with easdirect.Client(emulator.target("nothing_here", request_timeout_ms=200)) as c:
            async with httpx.AsyncClient(transport=edh.AsyncTransport(c)) as http:
                with pytest.raises(edh.NoInstanceAvailable):
                    await http.get("http://nothing_here/x")

    asyncio.run(main())
