"""Subscriptions: callbacks on the library's thread, their end, errors inside them, and exit."""

from __future__ import annotations

import gc
import logging
import queue
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import easdirect
from easdirect import _client as internals

from conftest import wait_for


def test_subscribe_delivers_lists_until_cancelled(emulator):
    with easdirect.Client(emulator.target()) as c:
        c.wait_ready(5)
        got: "queue.Queue[list]" = queue.Queue()
        threads = set()

        def on_change(instances):
            threads.add(threading.get_ident())
            got.put(instances)

        sub = c.subscribe(on_change)
        assert sub.active and sub in internals._active_subscriptions
        first = got.get(timeout=5)  # once soon after subscribing: a list is known
        assert sorted(i.port for i in first) == sorted(emulator.ports())
        assert all(isinstance(i, easdirect.Instance) for i in first)
        emulator.add_backends("svc", 1)
        second = got.get(timeout=5)
        assert len(second) == 4
        assert threading.get_ident() not in threads  # a library thread, not ours
        sub.cancel()
        assert not sub.active
        assert sub not in internals._active_subscriptions
        sub.cancel()  # idempotent
        emulator.add_backends("svc", 1)
        wait_for(lambda: len(c.instances()) == 5)
        time.sleep(0.2)
        assert got.empty()


def test_static_target_delivers_once():
    with easdirect.Client("static://127.0.0.1:1,127.0.0.1:2") as c:
        got: "queue.Queue[list]" = queue.Queue()
        with c.subscribe(got.put) as sub:
            assert [i.port for i in got.get(timeout=5)] == [1, 2]
        assert not sub.active


def test_exception_in_callback_is_logged_and_the_subscription_goes_on(emulator, caplog):
    calls = []

    def on_change(instances):
        calls.append(len(instances))
        if len(calls) == 1:
            raise RuntimeError("boom in callback")

    with caplog.at_level(logging.ERROR, logger="easdirect"):
        with easdirect.Client(emulator.target()) as c:
            c.wait_ready(5)
            sub = c.subscribe(on_change)
            wait_for(lambda: calls)
            emulator.add_backends("svc", 1)
            wait_for(lambda: len(calls) >= 2)
            assert calls[:2] == [3, 4] and sub.active
            assert c.select()  # the client still works
    assert any("boom in callback" in r.getMessage() or r.exc_info for r in caplog.records)
    assert "boom in callback" in caplog.text


def test_callback_may_use_the_client_and_cancel_itself(emulator):
    with easdirect.Client(emulator.target()) as c:
        c.wait_ready(5)
        seen = []
        holder = []

        def on_change(instances):
            seen.append((c.select().port, c.stats().instances, len(c.instances())))
            wait_for(lambda: holder)
            holder[0].cancel()  # from inside: ends once this callback returns

        holder.append(c.subscribe(on_change))
        sub = holder[0]
        wait_for(lambda: not sub.active)
        assert len(seen) == 1 and seen[0][1] == 3
        emulator.add_backends("svc", 1)
        wait_for(lambda: len(c.instances()) == 4)
        time.sleep(0.2)
        assert len(seen) == 1


def test_close_ends_subscriptions_before_it_returns(emulator):
    c = easdirect.Client(emulator.target())
    c.wait_ready(5)
    got: "queue.Queue[list]" = queue.Queue()
    sub = c.subscribe(got.put)
    got.get(timeout=5)
    c.close()
    assert not sub.active  # free_user_data ran inside close
    assert sub not in internals._active_subscriptions
    sub.cancel()  # harmless after close


def test_close_waits_for_a_running_callback(emulator):
    c = easdirect.Client(emulator.target())
    c.wait_ready(5)
    entered = threading.Event()
    finished = threading.Event()

    def slow(instances):
        entered.set()
        time.sleep(0.3)
        finished.set()

    sub = c.subscribe(slow)
    assert entered.wait(5)
    c.close()  # the GIL is released while it waits, so the callback can finish
    assert finished.is_set() and not sub.active


def test_dropping_the_client_ends_its_subscriptions(emulator):
    c = easdirect.Client(emulator.target())
    c.wait_ready(5)
    got: "queue.Queue[list]" = queue.Queue()
    sub = c.subscribe(got.put)
    got.get(timeout=5)
    del c
    gc.collect()
    assert not sub.active
    sub.cancel()  # its client is gone: nothing to do


def test_client_released_inside_its_own_callback(emulator):
    holder = [easdirect.Client(emulator.target())]
    holder[0].wait_ready(5)
    done = threading.Event()
    subscribed = threading.Event()

    def on_change(instances):
        # Until subscribe() has returned, the main thread still holds a reference.
        assert subscribed.wait(5)
        holder.clear()  # the last reference: the finalizer runs on this library thread
        gc.collect()
        done.set()

    sub = holder[0].subscribe(on_change)
    subscribed.set()
    assert done.wait(5)
    wait_for(lambda: not sub.active)  # closed by the finalizer, ended once the callback returned
    assert internals._deferred_free  # eas_client_free is not called from inside a callback
    # The deferred free happens on the next client creation (outside any callback).
    with easdirect.Client("static://127.0.0.1:1"):
        pass
    assert internals._deferred_free == []


def test_subscribe_refused_takes_no_ownership():
    c = easdirect.Client("static://127.0.0.1:1")
    c.close()
    before = set(internals._active_subscriptions)
    with pytest.raises(easdirect.ClosedError):
        c.subscribe(lambda _: None)
    assert set(internals._active_subscriptions) == before
    with pytest.raises(TypeError):
        easdirect.Client("static://127.0.0.1:1").subscribe(42)  # type: ignore[arg-type]


EXIT_SCRIPT = textwrap.dedent(
    """
    import sys, time, easdirect
    target = sys.argv[1]
    clients = []
    for i in range(4):
        c = easdirect.Client(target)
        c.wait_ready(5)
        def slow(instances, i=i):
            print("callback", i, len(instances), flush=True)
            time.sleep(0.2)
        c.subscribe(slow)
        clients.append(c)
    time.sleep(0.05)
    print("exiting", flush=True)
    """
)


def test_interpreter_exit_stops_callbacks(emulator, tmp_path):
    """A process that exits with subscriptions alive and callbacks running exits cleanly."""
    script = tmp_path / "exit_with_subscriptions.py"
    script.write_text(EXIT_SCRIPT)
    for _ in range(3):
        proc = subprocess.run(
            [sys.executable, str(script), emulator.target(refresh_interval_ms=10)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, proc.stderr
        assert "exiting" in proc.stdout
        assert "Fatal Python error" not in proc.stderr and "Traceback" not in proc.stderr
