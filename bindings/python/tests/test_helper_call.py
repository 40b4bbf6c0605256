"""The HTTP helpers' call (``easdirect._fastpick.Call``, made by ``_http.begin``): the steps of
``easdirect.Call`` in C. What the helpers rely on: the load headers of every form the helpers
hand over reach the core, a failure comes back as a status (never a crash), every path ends the
attempt once, and the call holds its client until it is freed.
"""

from __future__ import annotations

import gc

import httpx
import pytest
import requests.structures

import easdirect
from easdirect import Body, Outcome
from easdirect._errors import ClosedError, InvalidArgumentError, NoInstanceError, Status
from easdirect._fastpick import Call as HelperCall
from easdirect._fastpick import call_start
from easdirect._http import HelperOptions, begin, record

STATIC3 = "static://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3"


def report(n: int) -> str:
    return f"TEXT named_metrics.num_requests_waiting={n}.0"


def stats_of(client: easdirect.Client, id: int) -> easdirect.InstanceStats:
    return next(s for s in client.instance_stats() if s.id == id)


def in_flight(client: easdirect.Client) -> int:
    return sum(s.in_flight for s in client.instance_stats())


def start(client: easdirect.Client, key=None, idempotent: bool = True):
    call, inst = begin(HelperOptions(client, aliases=["svc"]), key, idempotent)
    assert isinstance(call, HelperCall) and isinstance(inst, easdirect.Instance)
    return call, inst


def test_record_passes_the_load_headers_of_each_form_the_helpers_hand_over():
    forms = [
        # requests: CaseInsensitiveDict's store (lower-case name -> (name, value))
        requests.structures.CaseInsensitiveDict({"Endpoint-Load-Metrics": report(1)})._store,
        # httpx: Headers' (name, lower-case name, value) triples
        httpx.Headers({"Endpoint-Load-Metrics": report(2), "X-A": "b"})._list,
        # pairs in any case, str or bytes
        [("Content-Length", "2"), ("ENDPOINT-LOAD-METRICS", report(3))],
        [(b"endpoint-load-metrics", report(4).encode())],
        # a dict of lower-case names to values
        {"endpoint-load-metrics": report(5)},
    ]
    with easdirect.Client(STATIC3, lb_policy="round_robin") as c:
        for n, headers in enumerate(forms, start=1):
            call, inst = start(c)
            assert call.record(Outcome.RESPONSE, 200, headers) is False
            call.close()
            s = stats_of(c, inst.id)
            assert (s.reported_waiting, s.report_unix_ms > 0) == (n, True), headers
        assert in_flight(c) == 0


def test_record_drops_nuls_and_takes_bytes_as_latin1_as_the_public_call_does():
    with easdirect.Client(STATIC3, lb_policy="round_robin") as c:
        call, inst = start(c)
        nul = report(7).replace("=", "\0=")
        call.record(Outcome.RESPONSE, 200, [("endpoint-load-metrics", nul)])
        call.close()
        assert stats_of(c, inst.id).reported_waiting == 7
        call, inst = start(c)  # a Latin-1 byte in a value: passed as UTF-8, the report still read
        latin1 = report(8).encode() + b",\xe9=1"
        call.record(Outcome.RESPONSE, 200, [(b"endpoint-load-metrics", latin1)])
        call.close()
        assert stats_of(c, inst.id).report_unix_ms > 0
        assert in_flight(c) == 0


def test_odd_headers_are_skipped_or_refused_without_harm():
    class Str:
        def __str__(self) -> str:
            return report(9)

    with easdirect.Client(STATIC3, lb_policy="round_robin") as c:
        call, inst = start(c)
        skipped = [None, 1, ("only-one",), (1, 2), ("endpoint-load-metrics",), ("a", "b", "c", "d")]
        assert call.record(Outcome.RESPONSE, 200, skipped + [("retry-after", Str())]) is False
        call.close()
        call, inst = start(c)
        with pytest.raises(TypeError):
            call.record(Outcome.RESPONSE, 200, "endpoint-load-metrics")
        with pytest.raises(TypeError):
            call.record("RESPONSE", 200, None)
        assert call.record(Outcome.RESPONSE, 200, [("endpoint-load-metrics", "\ud800")]) is False
        call.close()
        assert in_flight(c) == 0


def test_failures_come_back_as_statuses():
    with easdirect.Client(STATIC3, max_attempts=1) as c:
        call, inst = start(c)
        assert call.record(Outcome.RESPONSE, 600, None) == int(Status.INVALID_ARGUMENT)
        assert call.record(Outcome.RESPONSE, 200, None) is False
        assert call.record(Outcome.RESPONSE, 200, None) == int(Status.INVALID_ARGUMENT)  # recorded
        assert call.finish(99) == int(Status.INVALID_ARGUMENT)
        assert call.finish(Body.DONE) == 0
        assert call.next() == int(Status.NO_INSTANCE)  # max_attempts 1
        assert record(call, Outcome.RESET) is False  # the helpers' record: no retry
        call.close()
        call.close()  # idempotent
        assert call.closed
        assert call.next() == int(Status.CLOSED)
        assert call.record(Outcome.RESPONSE, 200, None) == int(Status.CLOSED)
        assert call.finish(Body.DONE) == int(Status.CLOSED)
        assert "closed" in repr(call)


def test_begin_raises_what_client_call_raises():
    c = easdirect.Client(STATIC3)
    opts = HelperOptions(c, aliases=["svc"])
    with pytest.raises(TypeError):
        begin(opts, 1.5, True)
    with pytest.raises(InvalidArgumentError):
        begin(opts, "\ud800", True)
    with pytest.raises(TypeError):
        call_start(c, c._hv, "not bytes", 0)
    assert call_start(c, c._hv, None, 1 << 40) == int(Status.INVALID_ARGUMENT)
    c.close()
    with pytest.raises(ClosedError):
        begin(opts, None, True)
    with easdirect.Client("static://127.0.0.1:1", max_attempts=1) as one:
        call, inst = start(one)
        assert call.next() == int(Status.NO_INSTANCE)
        call.close()
    with pytest.raises(NoInstanceError):
        raise easdirect._call.next_error(int(Status.NO_INSTANCE))


def test_a_call_never_closed_ends_its_attempt_and_holds_its_client():
    c = easdirect.Client(STATIC3)
    call, inst = start(c, key="session-1")
    assert in_flight(c) == 1
    del call
    gc.collect()
    assert in_flight(c) == 0  # freed when the object went: the attempt ended as CANCELLED
    call, inst = start(c, idempotent=False)
    del c  # the call holds the client: its native client outlives it
    gc.collect()
    assert call.record(Outcome.CONNECT_FAILED, 0, None) is True
    assert isinstance(call.next(), easdirect.Instance)
    call.close()
