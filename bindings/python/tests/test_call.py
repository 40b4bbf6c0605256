"""Calls (``Client.call``): picks, retries, affinity, in-flight counts, load reports, misuse.

Real behaviour of the core: the emulator's local backends answer real HTTP requests (or refuse
them), and the library decides; nothing of the core is mocked.
"""

from __future__ import annotations

import collections
import gc
import http.client
import threading
import weakref
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import pytest

import easdirect
from easdirect import Body, Outcome

STATIC3 = "static://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3"
LOAD_REPORT = "TEXT named_metrics.kv_cache_usage_perc=0.4, named_metrics.num_requests_waiting=3.0"


def send(inst: easdirect.Instance, headers: Optional[Dict[str, str]] = None) -> Tuple[int, Any]:
    """One POST to ``inst``: (status, the response's headers); raises OSError when refused."""
    conn = http.client.HTTPConnection(inst.ip, inst.port, timeout=10)
    try:
        conn.request("POST", "/api/predict/svc", body=b"{}", headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.msg
    finally:
        conn.close()


def attempt(call: easdirect.Call, headers: Optional[Dict[str, str]] = None) -> Tuple[bool, Any]:
    """One attempt as a user's loop makes it: (retry, status or None when refused)."""
    inst = call.next()
    try:
        status, resp_headers = send(inst, headers)
    except ConnectionRefusedError:
        return call.record(Outcome.CONNECT_FAILED), None
    return call.record(status=status, headers=resp_headers), status


def in_flight(client: easdirect.Client) -> Dict[int, int]:
    return {s.id: s.in_flight for s in client.instance_stats()}


def stats_of(client: easdirect.Client, id: int) -> easdirect.InstanceStats:
    return next(s for s in client.instance_stats() if s.id == id)


# -- picks and retries ---------------------------------------------------------------------------


def test_a_call_never_gives_the_same_instance_twice():
    target = "static://" + ",".join(f"127.0.0.1:{p}" for p in range(1, 6))
    with easdirect.Client(target, max_attempts=10) as c:
        for _ in range(20):
            with c.call() as call:
                ids = []
                while True:
                    ids.append(call.next().id)
                    if not call.record(Outcome.TIMEOUT):
                        break
                with pytest.raises(easdirect.NoInstanceError, match="another attempt"):
                    call.next()
            assert len(ids) == len(set(ids)) == 5  # every instance once, the budget capped at 5


def test_the_attempt_budget_holds(emulator):
    for port in emulator.ports():
        emulator.set_backend(port, "status", 503)
    with easdirect.Client(emulator.target(max_attempts=2)) as c:
        c.wait_ready(5)
        with c.call() as call:
            assert attempt(call) == (True, 503)
            assert attempt(call) == (False, 503)  # the second of 2: the caller has its answer
            with pytest.raises(easdirect.NoInstanceError):
                call.next()
    assert sum(emulator.hits().values()) == 2


def test_a_503_is_retried_on_another_instance_a_404_is_not(emulator):
    ports = emulator.ports()
    with easdirect.Client(emulator.target()) as c:
        c.wait_ready(5)
        emulator.set_backend(ports[0], "status", 503)
        emulator.set_backend(ports[1], "status", 503)
        emulator.set_backend(ports[2], "status", 503)
        with c.call() as call:
            results = [attempt(call) for _ in range(3)]  # max_attempts 3 by default
        assert results == [(True, 503), (True, 503), (False, 503)]
        assert all(h == 1 for h in emulator.hits().values())  # three different instances
        for port in ports:
            emulator.set_backend(port, "status", 404)
        with c.call() as call:
            assert attempt(call) == (False, 404)
            with pytest.raises(easdirect.NoInstanceError):
                call.next()
        assert sum(emulator.hits().values()) == 4


def test_a_call_that_is_not_idempotent_retries_only_when_nothing_was_sent(emulator):
    ports = emulator.ports()
    with easdirect.Client(emulator.target()) as c:
        c.wait_ready(5)
        for port in ports:
            emulator.set_backend(port, "status", 503)
        with c.call(idempotent=False) as call:
            assert attempt(call) == (False, 503)  # it may have been acted on: no retry
        for outcome in (Outcome.TIMEOUT, Outcome.RESET):
            with c.call(idempotent=False) as call:
                call.next()
                assert call.record(outcome) is False
        for port in ports:
            emulator.set_backend(port, "dead")
        with c.call(idempotent=False) as call:
            assert [attempt(call) for _ in range(3)] == [(True, None), (True, None), (False, None)]
        with c.call() as call:  # idempotent: the same
            assert attempt(call) == (True, None)


def test_a_keyed_call_gives_the_same_instance_for_the_same_key(emulator):
    with easdirect.Client(emulator.target()) as c:
        c.wait_ready(5)

        def first(key: Any) -> int:
            with c.call(key=key) as call:
                inst = call.next()
                call.record(status=200)
                return inst.id

        for k in range(10):
            key = f"session-{k}"
            ids = {first(key) for _ in range(5)} | {first(key.encode())}  # str is its UTF-8
            assert len(ids) == 1, key
        spread = collections.Counter(first(f"conversation-{k}") for k in range(60))
        assert len(spread) == 3  # the keys spread over every instance


# -- in-flight counts ------------------------------------------------------------------------------


def test_in_flight_counts_return_to_zero_on_every_path(emulator):
    with easdirect.Client(emulator.target()) as c:
        c.wait_ready(5)
        zero = {id: 0 for id in in_flight(c)}

        # record, then finish: in flight until the body is over
        call = c.call()
        inst = call.next()
        assert in_flight(c)[inst.id] == 1
        status, headers = send(inst)
        assert call.record(status=status, headers=headers) is False
        assert in_flight(c)[inst.id] == 1
        call.finish(Body.DONE)
        assert in_flight(c) == zero
        call.close()

        # closed mid-attempt (not recorded): CANCELLED, which is no failure
        call = c.call()
        inst = call.next()
        call.close()
        assert in_flight(c) == zero
        assert stats_of(c, inst.id).failures == 0

        # closed after record, without finish
        with c.call() as call:
            call.next()
            call.record(status=200)
        assert in_flight(c) == zero

        # a with block left by an exception, attempt open or recorded
        for record in (False, True):
            with pytest.raises(KeyError):
                with c.call() as call:
                    inst = call.next()
                    if record:
                        call.record(status=200)
                    raise KeyError("the caller's own failure")
            assert in_flight(c) == zero
            assert stats_of(c, inst.id).failures == 0

        # next with an attempt open: it ends as CANCELLED, which ends the call
        with c.call() as call:
            call.next()
            with pytest.raises(easdirect.NoInstanceError):
                call.next()
        assert in_flight(c) == zero

        # dropped without close, an attempt open: the finalizer frees it
        call = c.call()
        call.next()
        del call
        gc.collect()
        assert in_flight(c) == zero
        for _ in range(50):
            c.call().next()
        gc.collect()
        assert in_flight(c) == zero

        # a broken body counts a failure of its instance
        with c.call() as call:
            inst = call.next()
            call.record(status=200)
            call.finish(Body.BROKEN)
        assert in_flight(c) == zero
        assert stats_of(c, inst.id).failures == 1


def test_a_client_closed_mid_call_keeps_the_response(emulator):
    c = easdirect.Client(emulator.target())
    c.wait_ready(5)
    call = c.call()
    inst = call.next()
    status, headers = send(inst)
    c.close()
    assert call.record(status=status, headers=headers) is False  # the answer is not lost
    call.finish(Body.DONE)
    with pytest.raises(easdirect.ClosedError, match="client is closed"):
        call.next()
    call.close()
    call.close()  # twice: harmless
    with pytest.raises(easdirect.ClosedError):
        c.call()
    with pytest.raises(easdirect.ClosedError):
        c.instance_stats()  # the core shows no figures once closed


def test_a_call_holds_its_client_alive():
    c = easdirect.Client(STATIC3)
    client_ref = weakref.ref(c)
    call = c.call()
    del c
    gc.collect()
    assert client_ref() is not None
    assert call.next().port in (1, 2, 3)
    assert call.client is client_ref()
    call.close()
    del call
    gc.collect()
    assert client_ref() is None

    # dropped, never closed: the call is freed first, then the client
    c = easdirect.Client(STATIC3)
    client_ref = weakref.ref(c)
    c.call().next()
    del c
    gc.collect()
    assert client_ref() is None


def test_a_cycle_of_client_and_calls_is_collected_safely():
    class Holder:
        pass

    for _ in range(5):
        h = Holder()
        h.client = easdirect.Client(STATIC3)
        h.calls = [h.client.call() for _ in range(3)]
        h.calls[0].next()
        h.me = h  # a cycle: the collector decides the order of finalization
        client_ref = weakref.ref(h.client)
        del h
        gc.collect()
        assert client_ref() is None


# -- load reports, back-off, headers ----------------------------------------------------------


def test_a_load_report_reaches_instance_stats(emulator):
    emulator.control(
        "POST",
        "backends",
        {
            "service": "llm",
            "count": 2,
            "kind": "llm",
            "llm": {"slots": 2, "speed": 0.5, "base_ms": 5, "per_token_ms": 0},
        },
    )
    with easdirect.Client(emulator.target("llm")) as c:
        c.wait_ready(5)
        assert all(s.report_unix_ms == 0 for s in c.instance_stats())
        with c.call() as call:
            retry, status = attempt(call, {"endpoint-load-metrics-format": "text"})
            assert (retry, status) == (False, 200)
            call.finish()
        reported = [s for s in c.instance_stats() if s.report_unix_ms > 0]
        assert len(reported) == 1
        assert reported[0].in_flight == 0 and reported[0].attempts == 1
        assert reported[0].latency_ewma_us > 0


def test_record_passes_the_load_headers_of_any_header_object():
    import httpx
    import requests.structures

    from email.message import Message

    def report(n: int) -> str:
        return f"TEXT named_metrics.num_requests_waiting={n}.0"

    msg = Message()
    msg["Endpoint-Load-Metrics"] = report(6)
    forms = [
        {"endpoint-load-metrics": report(1), "content-type": "application/json"},
        [("Content-Length", "2"), ("ENDPOINT-LOAD-METRICS", report(2))],
        [(b"endpoint-load-metrics", report(3).encode())],
        requests.structures.CaseInsensitiveDict({"Endpoint-Load-Metrics": report(4)}),
        httpx.Headers({"endpoint-load-metrics": report(5)}),
        msg,  # http.client.HTTPMessage is one
    ]
    with easdirect.Client(STATIC3, lb_policy="round_robin") as c:
        for n, headers in enumerate(forms, start=1):
            with c.call() as call:
                inst = call.next()
                call.record(status=200, headers=headers)
            s = stats_of(c, inst.id)
            assert (s.reported_waiting, s.reported_kv_permille) == (n, 0), type(headers)
            assert s.report_unix_ms > 0
        with c.call() as call:  # the benchmark's header: both figures
            inst = call.next()
            call.record(status=200, headers={"endpoint-load-metrics": LOAD_REPORT})
        s = stats_of(c, inst.id)
        assert (s.reported_waiting, s.reported_kv_permille) == (3, 400)


def test_retry_after_backs_an_instance_off_without_a_failure():
    with easdirect.Client(STATIC3) as c:
        with c.call() as call:
            inst = call.next()
            assert call.record(status=503, headers={"Retry-After": "5"}) is True
            other = call.next()
            assert other.id != inst.id
            call.record(status=200)
        s = stats_of(c, inst.id)
        assert s.ejected_until_unix_ms > 0 and s.failures == 0
        for _ in range(20):  # backing off: out of the picks of calls
            with c.call() as call:
                assert call.next().id != inst.id
                call.record(status=200)


# -- service, target, stats ------------------------------------------------------------------


def test_service_and_target_never_show_a_secret():
    with easdirect.Client(
        "nacos://127.0.0.1:9/my_service?username=u&password=s3cr3t&refresh_interval_ms=100"
    ) as c:
        assert c.service == "my_service"
        assert c.target == "nacos://127.0.0.1:9/my_service"
        assert "s3cr3t" not in repr(c)
    with easdirect.Client(STATIC3) as c:
        assert c.service is None and c.target == STATIC3
        c.close()
        assert c.target == STATIC3  # still answers once closed


def test_instance_stats_of_a_static_target():
    with easdirect.Client("static://127.0.0.1:1*5,127.0.0.1:2,127.0.0.1:3*0") as c:
        stats = c.instance_stats()
        assert [s.id for s in stats] == [i.id for i in c.instances()]
        assert [s.weight for s in stats] == [5, 100, 0]
        assert all(isinstance(s, easdirect.InstanceStats) for s in stats)
        assert all(s.in_flight == s.attempts == s.failures == 0 for s in stats)


# -- misuse ------------------------------------------------------------------------------------


def test_misuse_raises_the_binding_errors():
    with easdirect.Client(STATIC3) as c:
        with c.call() as call:
            with pytest.raises(easdirect.InvalidArgumentError, match="no attempt is open"):
                call.record(status=200)
            call.finish()  # nothing recorded: nothing to do
            call.next()
            for bad in (None, 99, 600, True):
                with pytest.raises(easdirect.InvalidArgumentError, match="status"):
                    call.record(status=bad)
            with pytest.raises(TypeError):
                call.record(status="200")
            with pytest.raises(easdirect.InvalidArgumentError, match="unknown outcome"):
                call.record(9)
            with pytest.raises(easdirect.InvalidArgumentError, match="unknown body"):
                call.finish(7)
            assert call.record(status=200) is False
            with pytest.raises(easdirect.InvalidArgumentError, match="no attempt is open"):
                call.record(status=200)
        for method, args in (("next", ()), ("record", (Outcome.RESET,)), ("finish", ())):
            with pytest.raises(easdirect.ClosedError, match="call is closed"):
                getattr(call, method)(*args)
        assert call.closed and "closed" in repr(call)
        with pytest.raises(TypeError):
            c.call(key=42)
        with pytest.raises(easdirect.InvalidArgumentError):
            c.call(key="\udc80")
        with c.call(key=b"") as call:  # an empty key is no key
            call.next()


def test_a_call_used_from_two_threads_at_once_raises():
    with easdirect.Client(STATIC3) as c:
        call = c.call()
        call._busy.acquire()  # another thread is inside a method of the call
        try:
            for method, args in (("next", ()), ("record", (Outcome.RESET,)), ("finish", ())):
                with pytest.raises(RuntimeError, match="two threads"):
                    getattr(call, method)(*args)
            with pytest.raises(RuntimeError):
                call.close()
        finally:
            call._busy.release()
        call.close()

        # The same for real, many times over: errors, never a crash or a leak.
        target = "static://" + ",".join(f"127.0.0.1:{p}" for p in range(1, 101))
        with easdirect.Client(target, max_attempts=1000) as many:
            call = many.call()
            errors: collections.Counter = collections.Counter()
            expected = (RuntimeError, easdirect.NoInstanceError, easdirect.InvalidArgumentError)

            def hammer() -> None:
                for _ in range(500):
                    for step in (call.next, lambda: call.record(Outcome.TIMEOUT), call.finish):
                        try:
                            step()
                        except expected as e:
                            errors[type(e).__name__] += 1

            threads = [threading.Thread(target=hammer) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            call.close()
            assert set(errors) <= {"RuntimeError", "NoInstanceError", "InvalidArgumentError"}
            assert all(s.in_flight == 0 for s in many.instance_stats())


# -- the README's example --------------------------------------------------------------------------


def test_the_readme_request_loop_retries_through_the_call(emulator):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Calls\n", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: Dict[str, Any] = {}
    exec(compile(code, "README.md (Calls)", "exec"), namespace)
    predict = namespace["predict"]
    ports = emulator.ports()
    emulator.set_backend(ports[0], "status", 503)
    emulator.set_backend(ports[1], "dead")
    with easdirect.Client(emulator.target()) as c:
        c.wait_ready(5)
        for k in range(12):
            status, body = predict(c, b"{}", f"session-{k % 4}")
            assert status == 200 and str(ports[2]).encode() in body
        assert all(s.in_flight == 0 for s in c.instance_stats())
