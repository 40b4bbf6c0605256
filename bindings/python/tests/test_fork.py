"""Clients across os.fork(): a client inherited by the child keeps refreshing there (the library
restarts its refresher in the child), closing and freeing on both sides is safe, and clients
made in the child work. Every child ends with os._exit, and a child that hangs is killed at a
deadline and fails the test."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
import traceback
import weakref
from typing import Callable, Optional, Tuple

import pytest

import easdirect

from conftest import wait_for

pytestmark = [
    # Python 3.12+ warns about fork() in a process with threads (the emulator's readers, the
    # library's pool): forking such a process is what these tests are about.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


class Child:
    """``body()`` run in a forked child. The child exits 0 when it returns, 1 when it raises;
    what it ``note``s and its traceback come back through a pipe."""

    def __init__(self, body: Callable[["Child"], None]) -> None:
        self._r, self._w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                os.close(self._r)
                body(self)
                code = 0
            except BaseException:
                self.note(traceback.format_exc()[-3000:])
            finally:
                os._exit(code)  # never back into pytest, whatever happened
        os.close(self._w)

    def note(self, text: str) -> None:
        """In the child: adds a line to the report (kept short: the pipe is read at the end)."""
        try:
            os.write(self._w, (text[:3000] + "\n").encode("utf-8", "replace"))
        except OSError:
            pass

    def wait(self, timeout: float = 20.0) -> Tuple[Optional[int], str]:
        """In the parent: (the child's exit code, or None when it hung and was killed; report)."""
        deadline = time.monotonic() + timeout
        code: Optional[int] = None
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() >= deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                break
            time.sleep(0.01)
        chunks = []
        while True:
            chunk = os.read(self._r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(self._r)
        report = b"".join(chunks).decode("utf-8", "replace")
        if code is None:
            report += f"\n(the child hung: killed after {timeout} s)"
        return code, report


def weights(c: easdirect.Client) -> list:
    return [i.weight for i in c.instances()]


def test_a_client_made_before_fork_keeps_refreshing_in_the_child(emulator):
    port = emulator.ports()[0]
    emulator.set_items("forked", [{"ip": "127.0.0.1", "port": port, "weight": 100}])
    with easdirect.Client(emulator.target("forked", refresh_interval_ms=50)) as c:
        c.wait_ready(5)
        assert weights(c) == [100]

        def body(child: Child) -> None:
            # The parent changes the list after fork(): only a fetch made in this process can
            # bring the change here.
            wait_for(lambda: weights(c) == [7], timeout=15)
            assert c.select().weight == 7
            c.close()

        child = Child(body)
        emulator.set_items("forked", [{"ip": "127.0.0.1", "port": port, "weight": 7}])
        code, report = child.wait()
        assert code == 0, report
        wait_for(lambda: weights(c) == [7])  # and the parent's client, untouched by the child's
        assert not c.closed


def test_closing_and_freeing_on_both_sides_of_fork_is_safe(emulator):
    ports = set(emulator.ports())
    for round in range(6):
        # Refreshes every 10 ms: fork() often lands in the middle of one of the parent's.
        box = [easdirect.Client(emulator.target(refresh_interval_ms=10))]
        box[0].wait_ready(5)
        ref = weakref.ref(box[0])

        def body(child: Child) -> None:
            c = box[0]
            assert c.select().port in ports
            c.close()
            c.close()
            for call in (c.select, c.instances, c.stats, lambda: c.wait_ready(0)):
                with pytest.raises(easdirect.ClosedError):
                    call()
            del c
            box.clear()
            gc.collect()
            assert ref() is None  # the finalizer freed the inherited client in the child

        child = Child(body)
        if round % 2:
            box[0].close()  # the parent closes at once, while the child runs
        code, report = child.wait()
        assert code == 0, f"round {round}: {report}"
        c = box[0]
        if not round % 2:
            assert c.select().port in ports  # the child's close did not close the parent's
        c.close()
        with pytest.raises(easdirect.ClosedError):
            c.select()
        del c
        box.clear()
        gc.collect()
        assert ref() is None
    with easdirect.Client(emulator.target()) as c:  # the parent still makes working clients
        c.wait_ready(5)
        assert c.select().port in ports


def test_clients_made_in_the_child_work(emulator):
    ports = set(emulator.ports())
    with easdirect.Client(emulator.target(refresh_interval_ms=10)) as inherited:
        inherited.wait_ready(5)

        def body(child: Child) -> None:
            with easdirect.Client(emulator.target(refresh_interval_ms=50)) as c:
                c.wait_ready(10)
                assert {i.port for i in c.instances()} == ports
                assert c.select().port in ports
                seen = []
                sub = c.subscribe(seen.append)  # called on the child's own library thread
                wait_for(lambda: seen, timeout=10)
                sub.cancel()
                assert {i.port for i in seen[0]} == ports
            listed = [("10.0.0.1", 1), ("10.0.0.2", 2)]
            with easdirect.Client.from_source(lambda: listed, refresh_interval_ms=20) as s:
                s.wait_ready(10)
                assert sorted(i.port for i in s.instances()) == [1, 2]
                listed.append(("10.0.0.3", 3))
                wait_for(lambda: len(s.instances()) == 3, timeout=10)

        code, report = Child(body).wait()
        assert code == 0, report
        assert inherited.select().port in ports


def test_a_source_client_made_before_fork_calls_its_function_in_the_child():
    # No fetch is due while the test runs (the next one is 48 s or more away), so none is
    # running at fork(); the child's first call restarts refreshes there with a fetch at once.
    count = {"n": 2}
    callers = []

    def fetch():
        callers.append(os.getpid())
        return [("10.0.0.1", 50000 + i) for i in range(1, count["n"] + 1)]

    box = [easdirect.Client.from_source(fetch, refresh_interval_ms=60_000)]
    box[0].wait_ready(5)
    source = box[0]._source
    assert source is not None and source.active

    def body(child: Child) -> None:
        c = box[0]
        count["n"] = 3  # in the child's memory only
        wait_for(lambda: len(c.instances()) == 3, timeout=15)
        assert os.getpid() in callers  # the function ran in the child
        c.close()
        assert not source.active  # released in the child, once
        with pytest.raises(easdirect.ClosedError):
            c.select()

    code, report = Child(body).wait()
    assert code == 0, report
    c = box[0]
    assert source.active and not c.closed  # the child's close did not end the parent's source
    assert len(c.instances()) == 2 and set(callers) == {os.getpid()}
    c.close()
    assert not source.active


# A callback that a library thread of the parent is running when fork() is called has no thread
# to finish it in the child: there the library counts it as over, so the child's refreshes call
# the function again and close() / cancel() end it at once.


def test_a_source_client_forked_during_a_fetch_refreshes_and_closes_in_the_child():
    parent = os.getpid()
    count = {"n": 2}
    in_fetch = threading.Event()
    fetches = []

    def fetch():
        fetches.append(os.getpid())
        if os.getpid() == parent and len(fetches) > 1:
            in_fetch.set()
            time.sleep(1.0)  # the parent forks meanwhile
        return [("10.0.0.1", 50000 + i) for i in range(1, count["n"] + 1)]

    with easdirect.Client.from_source(fetch, refresh_interval_ms=20) as c:
        c.wait_ready(5)
        assert in_fetch.wait(5)

        def body(child: Child) -> None:
            count["n"] = 3
            deadline = time.monotonic() + 2
            while len(c.instances()) != 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            refreshed = len(c.instances()) == 3
            child.note(f"refreshed in the child: {refreshed}; last error: {c.last_error()}")
            c.close()
            child.note("closed in the child")
            assert refreshed

        code, report = Child(body).wait(timeout=6)
        assert code == 0, report


def test_a_subscription_forked_during_its_callback_cancels_in_the_child():
    parent = os.getpid()
    in_callback = threading.Event()

    def callback(instances):
        if os.getpid() == parent:
            in_callback.set()
            time.sleep(1.0)  # the parent forks meanwhile

    with easdirect.Client("static://10.0.0.1:1") as c:
        sub = c.subscribe(callback)
        assert in_callback.wait(5)

        def body(child: Child) -> None:
            assert c.select().port == 1
            sub.cancel()
            child.note("cancelled in the child")
            c.close()

        code, report = Child(body).wait(timeout=4)
        assert code == 0, report
