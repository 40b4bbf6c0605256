"""Every Client call and every error it can raise."""

from __future__ import annotations

import builtins
import collections
import gc
import re
import threading
import time

import pytest

import easdirect
from easdirect import Status
from easdirect._client import check_abi
from easdirect._errors import error_for

from conftest import fnv1a64, wait_for


# -- the import-time checks -----------------------------------------------------------------


def test_abi_and_versions():
    from easdirect._native import ffi

    major, minor = easdirect.abi_version()
    assert major == easdirect.ABI_MAJOR == 1
    assert minor >= easdirect.ABI_MINOR
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", easdirect.library_version())
    assert ffi.sizeof("eas_instance") == 128
    assert ffi.offsetof("eas_instance", "host") == 60
    assert ffi.sizeof("eas_instance_stats") == 64
    assert ffi.offsetof("eas_instance_stats", "report_unix_ms") == 48
    assert ffi.offsetof("eas_instance_stats", "reported_running") == 60


def test_check_abi_refuses_a_mismatched_library():
    assert easdirect.ABI_MINOR == 4  # logging and metrics_text need ABI 1.4
    check_abi((1 << 16) | 4, 128)
    check_abi((1 << 16) | 7, 128)  # a newer minor is fine
    with pytest.raises(ImportError, match=r"ABI version 1\.3.*needs 1\.x with x >= 4"):
        check_abi((1 << 16) | 3, 128)  # no eas_options_set_log
    with pytest.raises(ImportError, match=r"ABI version 2\.0.*needs 1\.x"):
        check_abi(2 << 16, 128)
    with pytest.raises(ImportError, match=r"ABI version 0\.3"):
        check_abi(3, 128)
    with pytest.raises(ImportError, match=r"sizeof\(eas_instance\) is 120"):
        check_abi((1 << 16) | 4, 120)
    with pytest.raises(ImportError, match="layout"):
        check_abi((1 << 16) | 4, 128, {"id": 0})
    with pytest.raises(ImportError, match=r"sizeof\(eas_instance_stats\) is 72"):
        check_abi((1 << 16) | 4, 128, None, 72)
    with pytest.raises(ImportError, match="eas_instance_stats layout"):
        check_abi((1 << 16) | 4, 128, None, 64, {"id": 0})


def test_status_values_and_strings():
    assert [int(s) for s in Status] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 99]
    assert easdirect.status_str(0)
    assert easdirect.status_str(Status.NO_INSTANCE) != easdirect.status_str(0)
    assert easdirect.status_str(12345) == "unknown status"
    assert easdirect.status_str(-1) == "unknown status"


def test_error_classes_carry_code_and_message():
    cases = {
        Status.NULL_PARAMETER: easdirect.NullParameterError,
        Status.INVALID_ARGUMENT: easdirect.InvalidArgumentError,
        Status.NO_INSTANCE: easdirect.NoInstanceError,
        Status.TIMEOUT: easdirect.TimeoutError,
        Status.DISCOVERY_FAILED: easdirect.DiscoveryFailedError,
        Status.BUFFER_TOO_SMALL: easdirect.BufferTooSmallError,
        Status.UNKNOWN_INSTANCE: easdirect.UnknownInstanceError,
        Status.CLOSED: easdirect.ClosedError,
        Status.PANIC: easdirect.PanicError,
    }
    for code, cls in cases.items():
        e = error_for(int(code), "the message")
        assert type(e) is cls and isinstance(e, easdirect.Error)
        assert e.code is code and e.message == "the message" and str(e) == "the message"
        assert repr(e) == f"{cls.__name__}({int(code)}, 'the message')"
    unknown = error_for(42, "m")
    assert type(unknown) is easdirect.Error and unknown.code == 42
    assert isinstance(error_for(4, ""), builtins.TimeoutError)
    assert isinstance(error_for(2, ""), ValueError)


# -- creating clients -------------------------------------------------------------------------


def test_bad_target_is_invalid_argument():
    with pytest.raises(easdirect.InvalidArgumentError) as ei:
        easdirect.Client("bogus://1.2.3.4/svc")
    assert ei.value.code == Status.INVALID_ARGUMENT
    assert "bogus" in ei.value.message
    with pytest.raises(easdirect.InvalidArgumentError):
        easdirect.Client("static://")
    with pytest.raises(TypeError):
        easdirect.Client(b"static://127.0.0.1:1")  # type: ignore[arg-type]


def test_bad_options_name_the_key():
    with pytest.raises(easdirect.InvalidArgumentError, match="no_such_key"):
        easdirect.Client("static://127.0.0.1:1", no_such_key=1)
    with pytest.raises(easdirect.InvalidArgumentError, match="refresh_interval_ms"):
        easdirect.Client("static://127.0.0.1:1", refresh_interval_ms="soon")
    with pytest.raises(easdirect.InvalidArgumentError, match="refresh_interval_ms"):
        easdirect.Client("static://127.0.0.1:1", refresh_interval_ms=5)  # below 10
    with pytest.raises(easdirect.InvalidArgumentError, match="ejection_base_ms"):
        easdirect.Client("static://127.0.0.1:1", ejection_base_ms=1000, ejection_max_ms=10)
    with pytest.raises(easdirect.InvalidArgumentError, match="failures_before_ejection"):
        easdirect.Client("static://127.0.0.1:1", failures_before_ejection=[1])
    with pytest.raises(easdirect.InvalidArgumentError, match="refresh_interval_ms"):
        # a key given twice in the query is rejected
        easdirect.Client("eas://127.0.0.1:1/svc?refresh_interval_ms=20&refresh_interval_ms=30")


def test_options_are_applied():
    with easdirect.Client(
        "static://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4",
        failures_before_ejection=2,
        max_ejection_percent=100,
        ejection_base_ms=60000,
        snapshot_file=None,  # None means "not set"
    ) as c:
        a = c.select()
        c.report_failure(a)
        assert c.stats().ejected == 0  # one failure is not enough with 2
        c.report_failure(a)
        assert c.stats().ejected == 1


# -- picks -------------------------------------------------------------------------------------


def test_static_target_is_ready_and_picks_by_weight():
    with easdirect.Client("static://127.0.0.1:1*5,127.0.0.1:2*1") as c:
        c.wait_ready(0)
        assert c.service is None and c.target.startswith("static://")
        picks = [c.select() for _ in range(6 * 20)]
        counts = collections.Counter(p.port for p in picks)
        assert counts == {1: 100, 2: 20}  # exact over full cycles within one thread
        inst = next(p for p in picks if p.port == 1)
        assert inst.ip == "127.0.0.1" and inst.weight == 5 and inst.host == "127.0.0.1:1"
        assert inst.id == fnv1a64(b"127.0.0.1:1")
        assert inst.url == "http://127.0.0.1:1"
        assert isinstance(inst, easdirect.Instance)


def test_ipv6_instance():
    with easdirect.Client("static://[::1]:8080") as c:
        inst = c.select()
        assert inst.ip == "::1" and inst.port == 8080 and inst.host == "[::1]:8080"
        assert inst.id == fnv1a64(b"[::1]:8080")


def test_select_excluding():
    with easdirect.Client("static://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3") as c:
        a = c.select()
        b = c.select_excluding(a)
        assert b.id != a.id
        third = c.select_excluding(a.id, b)
        assert third.id not in (a.id, b.id)
        for _ in range(20):
            assert c.select_excluding([a.id, b.id]) == third  # iterables are flattened
        with pytest.raises(easdirect.NoInstanceError) as ei:
            c.select_excluding(a, b, third)
        assert ei.value.code == Status.NO_INSTANCE and "excluded" in ei.value.message
        assert c.select_excluding() in (a, b, third)  # nothing excluded: a plain select
        assert c.select_excluding(12345) in (a, b, third)  # unknown ids exclude nothing


def test_weight_change_is_seen_by_select(emulator):
    port = emulator.ports()[0]
    emulator.set_items("w", [{"ip": "127.0.0.1", "port": port, "weight": 100}])
    with easdirect.Client(emulator.target("w")) as c:
        c.wait_ready(5)
        assert c.select().weight == 100
        emulator.set_items("w", [{"ip": "127.0.0.1", "port": port, "weight": 7}])
        wait_for(lambda: c.instances()[0].weight == 7)
        inst = c.select()
        assert inst.weight == 7 and inst.port == port


# -- ejection ----------------------------------------------------------------------------------


def test_report_failure_ejects_and_report_success_resets():
    with easdirect.Client("static://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4") as c:
        a = c.select()
        assert c.report_failure(a) is True
        s = c.stats()
        assert s.ejected == 1
        assert all(c.select().id != a.id for _ in range(40))
        assert c.report_success(a.id) is True
        assert c.stats().ejected == 1  # success does not end an ejection early
        # unknown ids are harmless
        assert c.report_failure(12345) is False
        assert c.report_success(12345) is False


def test_max_ejection_percent_limits_ejections():
    with easdirect.Client("static://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4") as c:
        for inst in c.instances():
            c.report_failure(inst)
        assert c.stats().ejected == 2  # 50% of 4


# -- observation -------------------------------------------------------------------------------


def test_instances_and_stats_of_a_static_target():
    with easdirect.Client("static://127.0.0.1:1*5,127.0.0.1:2,127.0.0.1:3*0") as c:
        insts = c.instances()
        assert [(i.port, i.weight) for i in insts] == [(1, 5), (2, 100), (3, 0)]
        s = c.stats()
        assert isinstance(s, easdirect.Stats)
        assert s.generation == 1 and s.refresh_ok == 1 and s.refresh_failed == 0
        assert s.instances == 3 and s.ejected == 0
        assert s.last_ok_unix_ms > 1_600_000_000_000
        assert c.last_error() is None
        assert all(c.select().port != 3 for _ in range(50))  # weight 0: never picked


def test_eas_discovery_lists_the_backends(emulator):
    with easdirect.Client(emulator.target()) as c:
        c.wait_ready(5)
        assert c.service == "svc"
        ports = sorted(emulator.ports())
        assert sorted(i.port for i in c.instances()) == ports
        counts = collections.Counter(c.select().port for _ in range(30))
        assert counts == {p: 10 for p in ports}
        s = c.stats()
        assert s.generation == 1 and s.refresh_ok >= 1 and s.instances == 3


def test_instances_grow(emulator):
    with easdirect.Client(emulator.target()) as c:
        c.wait_ready(5)
        emulator.add_backends("svc", 40)
        wait_for(lambda: len(c.instances()) == 43)
        assert c.stats().generation == 2


def test_before_the_first_list(emulator):
    emulator.set_fault("hang")
    with easdirect.Client(emulator.target(request_timeout_ms=300)) as c:
        assert c.instances() == []
        with pytest.raises(easdirect.NoInstanceError) as ei:
            c.select()
        assert "wait_ready" in ei.value.message
        with pytest.raises(easdirect.TimeoutError):
            c.wait_ready(0)
        s = c.stats()
        assert s.generation == 0 and s.instances == 0 and s.last_ok_unix_ms == 0


def test_wait_ready_timeout_and_last_error(emulator):
    emulator.set_fault("status", 500)
    with easdirect.Client(emulator.target()) as c:
        with pytest.raises(easdirect.TimeoutError) as ei:
            c.wait_ready(0.5)
        assert ei.value.code == Status.TIMEOUT
        assert "500" in ei.value.message
        assert isinstance(ei.value, builtins.TimeoutError)
        err = c.last_error()
        assert isinstance(err, easdirect.DiscoveryFailedError)
        assert err.code == Status.DISCOVERY_FAILED
        assert "500" in err.message and emulator.addr in err.message
        assert c.stats().refresh_failed >= 1
        emulator.set_fault("none")
        c.wait_ready(5)
        wait_for(lambda: c.last_error() is None)
    with pytest.raises(ValueError):
        c.wait_ready(-1)


def test_empty_discovery_answer_keeps_the_list(emulator):
    with easdirect.Client(emulator.target()) as c:
        c.wait_ready(5)
        failed = c.stats().refresh_failed
        emulator.set_fault("empty_list")
        wait_for(lambda: c.stats().refresh_failed >= failed + 2)
        assert len(c.instances()) == 3
        assert c.select().port in emulator.ports()
        assert isinstance(c.last_error(), easdirect.DiscoveryFailedError)


# -- closing and freeing -----------------------------------------------------------------------


def test_every_call_on_a_closed_client_raises_closed():
    c = easdirect.Client("static://127.0.0.1:1,127.0.0.1:2")
    a = c.select()
    assert not c.closed
    c.close()
    c.close()  # idempotent
    assert c.closed and "closed" in repr(c)
    calls = [
        c.select,
        lambda: c.select_excluding(a),
        lambda: c.report_failure(a),
        lambda: c.report_success(a.id),
        c.instances,
        c.stats,
        c.last_error,
        lambda: c.wait_ready(0),
        lambda: c.subscribe(lambda _: None),
    ]
    for call in calls:
        with pytest.raises(easdirect.ClosedError) as ei:
            call()
        assert ei.value.code == Status.CLOSED


def test_context_manager_closes():
    with easdirect.Client("static://127.0.0.1:1") as c:
        assert not c.closed
    assert c.closed


def test_finalizer_frees_clients():
    for _ in range(300):
        c = easdirect.Client("static://127.0.0.1:1,127.0.0.1:2")
        c.select()
    del c
    gc.collect()
    clients = [easdirect.Client("eas://127.0.0.1:9/svc?refresh_interval_ms=10") for _ in range(50)]
    del clients
    gc.collect()


def test_repr_never_shows_secrets():
    with easdirect.Client("static://127.0.0.1:1?refresh_interval_ms=100") as c:
        assert repr(c) == "<easdirect.Client static://127.0.0.1:1 open>"


# -- the GIL -------------------------------------------------------------------------------------


def test_wait_ready_releases_the_gil(emulator):
    emulator.set_fault("hang")
    with easdirect.Client(emulator.target(request_timeout_ms=2000)) as c:
        done = threading.Event()
        outcome = []

        def waiter():
            try:
                c.wait_ready(1.0)
            except easdirect.TimeoutError as e:
                outcome.append(e)
            done.set()

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.05)
        spins = 0
        while not done.is_set():
            spins += 1
        t.join()
        assert outcome and spins > 10_000  # this thread ran while the other one waited


# -- the pick path (easdirect._fastpick) ------------------------------------------------------


def test_select_excluding_many_ids_and_bad_ids():
    hosts = [f"127.0.0.{i}:80" for i in range(1, 101)]
    with easdirect.Client("static://" + ",".join(hosts)) as c:
        everything = c.instances()
        keep = everything[-1]
        # more ids than the C side keeps on its stack
        assert c.select_excluding(everything[:-1]) == keep
        assert c.select_excluding(*everything[:-1]) == keep
        with pytest.raises(easdirect.NoInstanceError):
            c.select_excluding(everything)
        with pytest.raises(OverflowError):
            c.select_excluding(-1)
        with pytest.raises(TypeError):
            c.select_excluding("not an id")


def test_select_returns_the_same_object_for_an_unchanged_instance():
    with easdirect.Client("static://127.0.0.1:1") as c:
        a, b = c.select(), c.select()
        assert a is b and a == easdirect.Instance(a.id, "127.0.0.1", 1, 100, "127.0.0.1:1")


def test_transport_is_poll_but_for_a_pushing_nacos_client_and_closed_raises():
    c = easdirect.Client("static://10.0.0.1:80,10.0.0.2:80")
    assert c.transport() == "poll"
    # A Nacos client whose server never answers: no stream came up.
    n = easdirect.Client("nacos://127.0.0.1:1/svc?request_timeout_ms=50")
    assert n.transport() == "poll"
    n.close()
    c.close()
    with pytest.raises(easdirect.ClosedError):
        c.transport()
