"""easdirect.requests.Adapter against real local HTTP instances behind the emulator."""

from __future__ import annotations

import collections
import socket

import pytest
import requests

import easdirect
import easdirect.requests as edr

from conftest import wait_for

URL = "http://svc/api/predict/svc"


@pytest.fixture
def client(emulator):
    c = easdirect.Client(emulator.target())
    c.wait_ready(5)
    yield c
    c.close()


def free_ports(n):
    """Ports where nothing listens (bound, then closed)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def total_hits(emulator):
    return sum(emulator.hits().values())


def test_routes_to_instances_keeping_path_query_and_body(emulator, client):
    s = edr.session(client)
    r = s.post(URL + "?x=1&y=two", data=b"hello")
    assert r.status_code == 200
    body = r.json()
    assert body["path"] == "/api/predict/svc?x=1&y=two"
    assert body["method"] == "POST" and body["body_len"] == 5
    assert body["backend"] == r.easdirect_instance.host
    assert r.url == URL + "?x=1&y=two" and r.request.url == r.url
    for _ in range(5):
        assert s.get(URL).status_code == 200
    assert sum(emulator.hits().values()) == 6  # one attempt each
    assert sum(st.in_flight for st in client.instance_stats()) == 0


def test_one_instance_answers_503_then_dies_no_request_is_lost(emulator, client):
    s = edr.session(client)
    bad = emulator.ports()[0]
    emulator.set_backend(bad, "status", 503)
    statuses = [s.post(URL, data=b"x").status_code for _ in range(30)]
    assert statuses == [200] * 30
    assert emulator.hits()[bad] == 1  # retried elsewhere, then ejected
    assert client.stats().ejected == 1
    emulator.set_backend(bad, "dead")
    statuses = [s.post(URL, data=b"x").status_code for _ in range(30)]
    assert statuses == [200] * 30


def test_a_dead_instance_is_retried_elsewhere(emulator):
    bad = emulator.ports()[1]
    emulator.set_backend(bad, "dead")
    with easdirect.Client(emulator.target(ejection_base_ms=10)) as c:  # ejections end at once
        c.wait_ready(5)
        s = edr.session(c)
        assert [s.get(URL).status_code for _ in range(12)] == [200] * 12


def test_empty_discovery_answer_keeps_serving(emulator, client):
    s = edr.session(client)
    failed = client.stats().refresh_failed
    emulator.set_fault("empty_list")
    wait_for(lambda: client.stats().refresh_failed >= failed + 2)
    assert [s.get(URL).status_code for _ in range(20)] == [200] * 20


def test_4xx_is_returned_at_once(emulator, client):
    for port in emulator.ports():
        emulator.set_backend(port, "status", 404)
    r = edr.session(client).post(URL, data=b"x")
    assert r.status_code == 404 and r.json()["status"] == 404
    assert total_hits(emulator) == 1
    assert client.stats().ejected == 0  # the instance answered: a success


def test_429_is_retried(emulator, client):
    busy = emulator.ports()[2]
    emulator.set_backend(busy, "status", 429)
    s = edr.session(client)
    assert [s.get(URL).status_code for _ in range(9)] == [200] * 9
    assert emulator.hits()[busy] <= 1  # then backing off


def test_the_clients_max_attempts_then_the_last_5xx(emulator):
    emulator.add_backends("svc", 2)  # five instances
    for port in emulator.ports():
        emulator.set_backend(port, "status", 502)
    with easdirect.Client(emulator.target(max_ejection_percent=0)) as c:
        c.wait_ready(5)
        wait_for(lambda: len(c.instances()) == 5)
        r = edr.session(c).post(URL, data=b"x")
        assert r.status_code == 502
        assert total_hits(emulator) == 3  # the client's max_attempts, 3 by default
        r = edr.session(c, max_attempts=2).post(URL, data=b"x")  # the helper's extra cap
        assert r.status_code == 502 and total_hits(emulator) == 5
        r = edr.session(c, max_attempts=10).post(URL, data=b"x")  # a cap never raises it
        assert total_hits(emulator) == 8
    with easdirect.Client(emulator.target(max_ejection_percent=0, max_attempts=10)) as c:
        c.wait_ready(5)
        wait_for(lambda: len(c.instances()) == 5)
        r = edr.session(c).post(URL, data=b"x")
        assert total_hits(emulator) == 13  # never more attempts than instances


def test_never_more_attempts_than_instances(emulator):
    ports = emulator.ports()[:2]
    for port in ports:
        emulator.set_backend(port, "status", 500)
    target = "static://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    with easdirect.Client(target) as c:
        r = edr.session(c, aliases=["model"]).get("http://model/x")
        assert r.status_code == 500
        assert total_hits(emulator) == 2


def test_connection_errors_are_raised_when_every_attempt_fails():
    target = "static://" + ",".join(f"127.0.0.1:{p}" for p in free_ports(2))
    with easdirect.Client(target) as c:
        with pytest.raises(requests.ConnectionError):
            edr.session(c, aliases=["model"]).get("http://model/x", timeout=2)
        assert c.stats().ejected == 1  # both failed; at most 50% ejected


def test_timeouts_are_retried(emulator, client):
    slow = emulator.ports()[0]
    emulator.set_backend(slow, "hang")
    s = edr.session(client)
    assert [s.get(URL, timeout=0.3).status_code for _ in range(6)] == [200] * 6
    assert emulator.hits()[slow] <= 1  # then ejected


def all_status(emulator, status):
    for port in emulator.ports():
        emulator.set_backend(port, "status", status)


def test_non_idempotent_methods_are_not_retried_when_disabled(emulator, client):
    all_status(emulator, 503)
    s = edr.session(client, idempotent_retries_only=True)
    assert s.post(URL, data=b"x").status_code == 503
    assert total_hits(emulator) == 1
    r = s.post(URL, data=b"x", headers={"Idempotency-Key": "k1"})  # made idempotent
    assert r.status_code == 503 and total_hits(emulator) == 1 + 3


def test_idempotent_methods_are_retried_when_non_idempotent_are_not(emulator, client):
    all_status(emulator, 503)
    s = edr.session(client, idempotent_retries_only=True)
    assert s.put(URL, data=b"x").status_code == 503
    assert total_hits(emulator) == 3


def test_retry_non_idempotent_still_works_with_a_warning(emulator, client):
    all_status(emulator, 503)
    with pytest.warns(DeprecationWarning, match="idempotent_retries_only=True"):
        s = edr.session(client, retry_non_idempotent=False)
    assert s.post(URL, data=b"x").status_code == 503
    assert total_hits(emulator) == 1


def test_generator_and_file_bodies_are_replayed(emulator, client, tmp_path):
    ports = emulator.ports()
    for port in ports[:2]:
        emulator.set_backend(port, "status", 500)
    s = edr.session(client)
    for _ in range(3):
        r = s.post(URL, data=(chunk for chunk in [b"abc", b"defg"]))
        assert r.status_code == 200 and r.json()["body_len"] == 7
    f = tmp_path / "body.bin"
    f.write_bytes(b"z" * 1000)
    with f.open("rb") as fh:
        r = s.post(URL, data=fh)
    assert r.status_code == 200 and r.json()["body_len"] == 1000


def test_other_hosts_pass_through(emulator, client):
    s = edr.session(client)
    port = emulator.ports()[0]
    r = s.get(f"http://127.0.0.1:{port}/direct")
    assert r.status_code == 200 and r.json()["path"] == "/direct"
    assert not hasattr(r, "easdirect_instance")


def test_aliases_and_case(emulator, client):
    s = edr.session(client, aliases=["model.internal"])
    assert s.get("http://model.internal/a").status_code == 200
    assert s.get("http://SVC/a").status_code == 200


def test_no_instance_known(emulator):
    with easdirect.Client(emulator.target("unknown_service", request_timeout_ms=200)) as c:
        with pytest.raises(edr.NoInstanceAvailable) as ei:
            edr.session(c).get("http://unknown_service/x")
    assert isinstance(ei.value, requests.ConnectionError)
    assert isinstance(ei.value, easdirect.NoInstanceError)
    assert ei.value.code == easdirect.Status.NO_INSTANCE


def test_adapter_options_are_checked(client):
    with pytest.raises(ValueError):
        edr.Adapter(client, max_attempts=0)
    with pytest.raises(ValueError):
        edr.Adapter(client, scheme="ftp")
    with easdirect.Client("static://127.0.0.1:1") as c:
        with pytest.raises(ValueError, match="aliases"):
            edr.Adapter(c)
    with pytest.raises(TypeError):
        edr.Adapter("svc")  # type: ignore[arg-type]


def test_no_proxy_is_checked_against_the_instance(emulator, client, monkeypatch):
    dead_proxy = free_ports(1)[0]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead_proxy}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    s = edr.session(client)
    assert [s.get(URL).status_code for _ in range(3)] == [200] * 3
