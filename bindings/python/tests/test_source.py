"""Sources from the caller's own function (Client.from_source): followed like any target,
failures keep the cache, the callable is released once when the client closes, and exit."""

from __future__ import annotations

import gc
import ipaddress
import logging
import queue
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import pytest

import easdirect
from easdirect import _client as internals

from conftest import wait_for


class Registry:
    """A source function whose answer the test changes: n instances, an exception, None."""

    def __init__(self, n: int = 2) -> None:
        self.n = n
        self.error: "BaseException | None" = None
        self.none = False
        self.extra: list = []
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            self.calls += 1
            n, error, none, extra = self.n, self.error, self.none, list(self.extra)
        if error is not None:
            raise error
        if none:
            return None
        return [("10.0.0.1", 50000 + i) for i in range(1, n + 1)] + extra

    def set(self, n: int = 0, error: "BaseException | None" = None, none: bool = False) -> None:
        with self.lock:
            self.n, self.error, self.none = n, error, none

    def wait_calls(self, k: int) -> None:
        seen = self.calls
        wait_for(lambda: self.calls >= seen + k)


def test_a_changing_list_is_followed_and_failures_keep_the_cache(caplog):
    reg = Registry(2)
    with easdirect.Client.from_source(reg, refresh_interval_ms=10) as c:
        c.wait_ready(5)
        assert sorted(i.port for i in c.instances()) == [50001, 50002]
        assert all(i.weight == easdirect.DEFAULT_WEIGHT == 100 for i in c.instances())
        assert c.service is None and c.target.startswith("<source ")
        assert "<source " in repr(c) and "open" in repr(c)
        reg.set(4)
        wait_for(lambda: len(c.instances()) == 4)
        assert c.last_error() is None

        # An exception: logged, the cache kept, carried by last_error.
        with caplog.at_level(logging.ERROR, logger="easdirect"):
            reg.set(error=ConnectionError("registry unreachable"))
            reg.wait_calls(3)
        assert len(c.instances()) == 4 and c.select().port > 50000
        assert "registry unreachable" in caplog.text
        assert any(r.name == "easdirect" and r.exc_info for r in caplog.records)
        err = wait_for(lambda: c.last_error())
        assert isinstance(err, easdirect.DiscoveryFailedError)
        assert "ConnectionError: registry unreachable" in str(err)
        assert isinstance(err.__cause__, ConnectionError)

        # None: a failed fetch too (a forgotten return), logged.
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="easdirect"):
            reg.set(none=True)
            reg.wait_calls(3)
        assert len(c.instances()) == 4
        assert "returned None" in caplog.text

        # An empty list keeps the cache; last_error says so (no exception to carry).
        reg.set(0)
        reg.wait_calls(3)
        assert len(c.instances()) == 4
        err = c.last_error()
        assert isinstance(err, easdirect.DiscoveryFailedError) and err.__cause__ is None
        assert c.stats().refresh_failed >= 9

        # Followed again.
        reg.set(1)
        wait_for(lambda: len(c.instances()) == 1)
        assert c.last_error() is None


def test_a_generator_that_raises_midway_is_a_failed_fetch():
    state = {"fail": False}

    def fetch():
        yield ("10.0.0.1", 1)
        if state["fail"]:
            raise RuntimeError("lost the registry halfway")
        yield ("10.0.0.1", 2)

    with easdirect.Client.from_source(fetch, refresh_interval_ms=10) as c:
        c.wait_ready(5)
        assert len(c.instances()) == 2
        state["fail"] = True
        err = wait_for(lambda: c.last_error())
        assert "lost the registry halfway" in str(err)
        assert len(c.instances()) == 2  # not the half list


def test_bad_items_are_skipped_with_a_warning(caplog):
    items = [
        ("10.0.0.1", 1),
        easdirect.Endpoint("10.0.0.2", 2),  # default weight
        easdirect.Endpoint("10.0.0.3", 3, 0),  # listed, never picked
        ("fd00::1", 4, 7),
        ("[fd00::2]", 5, 8),
        (ipaddress.ip_address("10.0.0.4"), 6, 9),
        ["10.0.0.5", 7, 10],
        "10.0.0.9:9",  # not a tuple
        ("10.0.0.9",),  # too short
        ("10.0.0.9", 9, 1, "x"),  # too long
        ("not-an-ip", 9),  # refused by the library
        ("10.0.0.9\0junk", 9),  # a NUL would cut it short
        ("10.0.0.9", 0),
        ("10.0.0.9", 70000),
        ("10.0.0.9", "80"),
        ("10.0.0.9", True),
        ("10.0.0.9", 9, -1),
        ("10.0.0.9", 9, 2**32),
        ("10.0.0.9", 9, 1.5),
        (b"10.0.0.9", 9),
        None,
    ]
    with caplog.at_level(logging.WARNING, logger="easdirect"):
        with easdirect.Client.from_source(lambda: items, refresh_interval_ms=20) as c:
            c.wait_ready(5)
            got = {(i.host, i.weight) for i in c.instances()}
            assert got == {
                ("10.0.0.1:1", 100),
                ("10.0.0.2:2", 100),
                ("10.0.0.3:3", 0),
                ("[fd00::1]:4", 7),
                ("[fd00::2]:5", 8),
                ("10.0.0.4:6", 9),
                ("10.0.0.5:7", 10),
            }
            for _ in range(50):
                assert c.select().weight > 0
            first = c.stats().refresh_ok
            wait_for(lambda: c.stats().refresh_ok >= first + 3)
    assert "skipped 14 malformed item(s) of 21" in caplog.text, caplog.text
    warnings = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING  # not at each refresh


def test_close_releases_the_callable_once_and_no_fetch_follows():
    released = []

    class Fetch:
        calls = 0

        def __call__(self):
            Fetch.calls += 1
            return [("10.0.0.1", 80)]

    fetch = Fetch()
    weakref.finalize(fetch, released.append, "released")
    ref = weakref.ref(fetch)
    c = easdirect.Client.from_source(fetch, refresh_interval_ms=10)
    del fetch
    source = c._source
    assert source is not None and source in internals._active_sources
    c.wait_ready(5)
    wait_for(lambda: Fetch.calls >= 3)
    gc.collect()
    assert released == [] and ref() is not None  # alive while the client is open
    c.close()
    assert source not in internals._active_sources and not source.active
    gc.collect()
    assert released == ["released"] and ref() is None  # released inside close
    calls = Fetch.calls
    c.close()  # idempotent
    time.sleep(0.1)
    assert Fetch.calls == calls, "fetch called after close"
    assert released == ["released"]
    with pytest.raises(easdirect.ClosedError):
        c.select()
    del c
    gc.collect()
    assert released == ["released"]


def test_close_waits_for_a_fetch_in_progress():
    entered = threading.Event()
    finished = threading.Event()

    def slow():
        entered.set()
        time.sleep(0.2)
        finished.set()
        return [("10.0.0.1", 80)]

    c = easdirect.Client.from_source(slow, refresh_interval_ms=10)
    assert entered.wait(5)
    c.close()  # the GIL is released while it waits, so the fetch can finish
    assert finished.is_set()
    assert not c._source.active


def test_dropping_the_client_releases_the_callable():
    released = []

    def make():
        def fetch():
            return [("10.0.0.1", 80)]

        weakref.finalize(fetch, released.append, 1)
        c = easdirect.Client.from_source(fetch)
        c.wait_ready(5)
        return weakref.ref(c._source)

    source = make()
    gc.collect()
    assert released == [1]
    assert source() is None or not source().active


def test_a_source_may_use_and_close_its_own_client():
    holder = []
    seen = []

    def fetch():
        if holder:
            c = holder[0]
            seen.append(c.stats().instances)
            if len(seen) >= 3:
                c.close()  # from inside: the source ends once this fetch returns
        return [("10.0.0.1", 80)]

    c = easdirect.Client.from_source(fetch, refresh_interval_ms=10)
    source = c._source
    holder.append(c)
    wait_for(lambda: not source.active)
    assert c.closed
    holder.clear()


def test_a_client_released_inside_its_own_fetch_is_freed_later():
    holder = []
    done = threading.Event()

    def fetch():
        if holder:
            holder.clear()  # the last reference: the finalizer runs on this library thread
            gc.collect()
            done.set()
        return [("10.0.0.1", 80)]

    holder.append(easdirect.Client.from_source(fetch, refresh_interval_ms=10))
    source = holder[0]._source
    assert done.wait(5)
    wait_for(lambda: not source.active)  # closed by the finalizer, ended once the fetch returned
    with easdirect.Client("static://127.0.0.1:1"):
        pass  # drains the deferred free
    assert internals._deferred_free == []


def test_a_refused_source_takes_no_ownership():
    before = set(internals._active_sources)
    calls = []

    def fetch():
        calls.append(1)
        return []

    with pytest.raises(easdirect.InvalidArgumentError, match="no_such_key"):
        easdirect.Client.from_source(fetch, no_such_key=1)
    with pytest.raises(easdirect.InvalidArgumentError, match="tls_ca_file"):
        easdirect.Client.from_source(fetch, tls_ca_file="/etc/ca.pem")
    assert set(internals._active_sources) == before
    with pytest.raises(TypeError):
        easdirect.Client.from_source(42)  # type: ignore[arg-type]
    time.sleep(0.05)
    assert calls == []


def test_a_source_client_subscribes_picks_and_ejects_like_any_other():
    reg = Registry(2)
    with easdirect.Client.from_source(reg, refresh_interval_ms=10) as c:
        got: "queue.Queue[list]" = queue.Queue()
        with c.subscribe(got.put):
            assert len(got.get(timeout=5)) == 2
            reg.set(3)
            while len(got.get(timeout=5)) != 3:
                pass
        inst = c.select()
        c.report_failure(inst)
        for _ in range(20):
            assert c.select().id != inst.id


def test_a_busy_python_thread_does_not_slow_a_large_fetch():
    """The whole list goes to the library in one call: no GIL round trip per instance."""
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(range(1000))

    busy = threading.Thread(target=spin, daemon=True)
    busy.start()
    try:
        items = [(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 8080) for i in range(5000)]
        with easdirect.Client.from_source(lambda: items) as c:
            start = time.monotonic()
            c.wait_ready(10)
            assert len(c.instances()) == 5000
            assert time.monotonic() - start < 5
    finally:
        stop.set()
        busy.join()


EXIT_SCRIPT = textwrap.dedent(
    """
    import sys, time, easdirect
    clients = []
    for i in range(4):
        def slow(i=i):
            print("fetch", i, flush=True)
            time.sleep(0.1)
            return [("10.0.0.1", 80 + i)]
        c = easdirect.Client.from_source(slow, refresh_interval_ms=10)
        c.wait_ready(5)
        clients.append(c)
    # One client that is unreachable but not yet collected (a reference cycle).
    c = easdirect.Client.from_source(lambda: [("10.0.0.1", 1)], refresh_interval_ms=10)
    c.cycle = c
    del c
    time.sleep(0.05)
    print("exiting", flush=True)
    """
)


def test_interpreter_exit_stops_fetches(tmp_path):
    """A process that exits with sources alive and fetches running exits cleanly."""
    script = tmp_path / "exit_with_sources.py"
    script.write_text(EXIT_SCRIPT)
    for _ in range(3):
        proc = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 0, proc.stderr
        assert "exiting" in proc.stdout
        assert "Fatal Python error" not in proc.stderr and "Traceback" not in proc.stderr
