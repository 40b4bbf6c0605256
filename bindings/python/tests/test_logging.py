"""The library's log lines reach a logging logger: the events, the levels, no secret, the
threshold taken from the logger, and the logger released once the client is freed."""

from __future__ import annotations

import gc
import itertools
import logging
import subprocess
import sys
import threading
import weakref
from typing import List

import pytest

import easdirect
from easdirect import _log_sink
from conftest import wait_for

_names = itertools.count()


class Lines(logging.Handler):
    """Keeps every record it gets (from the library's log thread)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._lock_records = threading.Lock()
        self._records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_records:
            self._records.append(record)

    @property
    def records(self) -> List[logging.LogRecord]:
        with self._lock_records:
            return list(self._records)

    def messages(self, containing: str = "", level: int = 0) -> List[str]:
        return [
            r.getMessage()
            for r in self.records
            if containing in r.getMessage() and (not level or r.levelno == level)
        ]

    def wait_for(self, containing: str, count: int = 1, timeout: float = 20.0) -> List[str]:
        def enough() -> List[str]:
            found = self.messages(containing)
            return found if len(found) >= count else []

        try:
            return wait_for(enough, timeout)
        except AssertionError:
            raise AssertionError(
                f"no {count} line(s) with {containing!r} within {timeout} s; got "
                f"{self.messages()}"
            ) from None


def make_logger(level: int = logging.DEBUG):
    """A logger of the test's own (not propagating to the root) and the handler it feeds."""
    logger = logging.getLogger(f"easdirect.test.{next(_names)}")
    logger.setLevel(level)
    logger.propagate = False
    lines = Lines()
    logger.addHandler(lines)
    return logger, lines


def test_a_failing_upstream_logs_one_warning_per_streak_and_one_info_on_recovery(emulator):
    logger, lines = make_logger(logging.INFO)
    with easdirect.Client(emulator.target(), logger=logger) as client:
        client.wait_ready(10)
        lines.wait_for("list 1: 3 instances (+3 -0)")
        for streak in (1, 2):
            failed = client.stats().refresh_failed
            emulator.set_fault("status", 503)
            # Several failed fetches (50 ms apart), so that a line per fetch would show.
            wait_for(lambda: client.stats().refresh_failed >= failed + 5, timeout=20)
            emulator.set_fault("none")
            lines.wait_for("discovery recovered after", count=streak)
        total_failed = client.stats().refresh_failed
    warnings = lines.messages("discovery failed")
    assert len(warnings) == 2, lines.messages()
    for w in warnings:
        assert w.startswith(f"{client.target}: discovery failed, keeping the last list: "), w
        assert "503" in w and f"upstreams/{emulator.service}" in w, w
    assert len(lines.messages("discovery failed", level=logging.WARNING)) == 2
    recovered = lines.messages("discovery recovered after", level=logging.INFO)
    assert len(recovered) == 2, lines.messages()
    # "... recovered after N failed fetches": the two streaks are every failed fetch.
    counts = [int(r.split("recovered after ")[1].split()[0]) for r in recovered]
    assert all(n >= 5 for n in counts) and sum(counts) == total_failed, (counts, total_failed)
    assert all(r.name == logger.name for r in lines.records)


def test_an_ejection_logs_the_instance(emulator):
    logger, lines = make_logger(logging.INFO)
    with easdirect.Client(emulator.target(), failures_before_ejection=1, logger=logger) as client:
        client.wait_ready(10)
        inst = client.select()
        assert client.report_failure(inst)
        [line] = lines.wait_for(f"instance {inst.host} ejected for ")
        assert line.startswith(f"{client.target}: instance {inst.host} ejected for "), line
        assert line.endswith(" ms after failures"), line
        assert [r.levelno for r in lines.records if r.getMessage() == line] == [logging.INFO]
        others = {i.host for i in client.instances()} - {inst.host}
        assert not any(h in line for h in others), line


@pytest.mark.parametrize("secrets_in", ["options", "query"])
def test_no_secret_reaches_a_log_line(secrets_in):
    password, secret_key = "pw-Very-Secret-7731", "sk-Very-Secret-4419"
    secrets = {"password": password, "secret_key": secret_key}
    logger, lines = make_logger(logging.DEBUG)
    target = "nacos://127.0.0.1:1/svc"
    options = {"nacos_transport": "http", "username": "ops", "access_key": "ak-id",
               "refresh_interval_ms": 50}
    if secrets_in == "options":
        options.update(secrets)
    else:
        target += "?" + "&".join(f"{k}={v}" for k, v in secrets.items())
    with easdirect.Client(target, logger=logger, **options) as client:
        # Nothing listens on port 1: every fetch fails, the first of the streak is logged.
        lines.wait_for("discovery failed")
        wait_for(lambda: client.stats().refresh_failed >= 3, timeout=20)
        text = client.metrics_text()
    logged = "\n".join(lines.messages())
    assert "127.0.0.1:1" in logged, logged
    for secret in secrets.values():
        assert secret not in logged, logged
        assert secret not in text
        assert secret not in client.target


def test_the_logger_is_released_once_the_client_is_closed_and_freed(emulator):
    logger = logging.Logger("easdirect-test-release")  # not in logging's registry
    lines = Lines()
    logger.addHandler(lines)
    ref = weakref.ref(logger)
    client = easdirect.Client(emulator.target(), logger=logger)
    sink = client._log_sink
    del logger
    client.wait_ready(10)
    lines.wait_for("list 1:")
    gc.collect()
    assert ref() is not None  # the library may still log: the binding holds it
    client.close()
    gc.collect()
    assert ref() is not None and sink.active  # closed, not freed: free_user_data has not run
    del client
    gc.collect()
    wait_for(lambda: gc.collect() is not None and ref() is None, timeout=20)
    assert not sink.active and id(sink) not in _log_sink._registry


def test_the_exit_hook_waits_for_the_line_in_python():
    """A client left open while lines queue up for a slow handler: at interpreter exit,
    easdirect's hook waits for the line being handled (releasing the GIL, which that line
    needs) and lets no later line enter the interpreter. So each line handled is handled to
    its end, before the hook registered ahead of easdirect's import (so run after it)."""
    code = """
import atexit, logging, time
atexit.register(lambda: print("after easdirect's exit hook", flush=True))
import easdirect

class Slow(logging.Handler):
    def emit(self, record):
        print("start", record.getMessage(), flush=True)
        time.sleep(0.08)
        print("done", record.getMessage(), flush=True)

logger = logging.getLogger("easdirect")
logger.addHandler(Slow())
logger.setLevel(logging.INFO)
client = easdirect.Client("static://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3",
                          failures_before_ejection=1, ejection_base_ms=10, ejection_max_ms=10,
                          max_ejection_percent=100, refresh_interval_ms=10)
end = time.monotonic() + 0.5
while time.monotonic() < end:  # ejections: about 10 lines a second, 80 ms each
    for inst in client.instances():
        client.report_failure(inst)
    time.sleep(0.005)
print("script done", flush=True)
"""
    for _ in range(3):
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        out = proc.stdout.splitlines()
        assert "script done" in out and out[-1] == "after easdirect's exit hook", out
        started = [line[len("start "):] for line in out if line.startswith("start ")]
        finished = [line[len("done "):] for line in out if line.startswith("done ")]
        assert started and started == finished, out


def test_a_logger_released_on_the_log_thread_at_exit_does_not_abort():
    """Clients closed and freed just before the interpreter exits, with lines of theirs still
    queued: the library lets go of their loggers on its log thread, which must not enter a
    finalizing interpreter (there a thread taking the GIL is ended with pthread_exit, which
    aborts the process from inside the library)."""
    code = """
import logging, easdirect
logger = logging.getLogger("easdirect")
logger.setLevel(logging.INFO)
logger.addHandler(logging.NullHandler())
logger.propagate = False
clients = [easdirect.Client("static://127.0.0.1:1,127.0.0.1:2", failures_before_ejection=1,
                            max_ejection_percent=100) for _ in range(30)]
for c in clients:
    for inst in c.instances():
        c.report_failure(inst)  # an ejection line each, queued
for c in clients:
    c.close()
del c, clients  # freed here: the queued lines hold the loggers
print("done", flush=True)
"""
    for _ in range(10):  # before the fix, about one run in two aborted
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0 and proc.stdout == "done\n", (proc.returncode, proc.stderr)


def test_logger_false_logs_nothing(emulator, caplog):
    with caplog.at_level(logging.DEBUG, logger="easdirect"):
        with easdirect.Client(emulator.target(), logger=False) as quiet:
            quiet.wait_ready(10)
            # The lines of one log thread come in order: once a later client's first list is
            # logged, the quiet client's (made and ready before) would have been too.
            with easdirect.Client(emulator.target()) as loud:
                loud.wait_ready(10)
                wait_for(lambda: any("list 1:" in r.getMessage() for r in caplog.records), 20)
    lists = [r for r in caplog.records if r.name == "easdirect" and "list 1:" in r.getMessage()]
    assert len(lists) == 1, [r.getMessage() for r in caplog.records]


def test_the_default_logger_is_easdirect(emulator, caplog):
    with caplog.at_level(logging.INFO, logger="easdirect"):
        with easdirect.Client(emulator.target()) as client:
            client.wait_ready(10)
            wait_for(
                lambda: any(
                    r.getMessage() == f"{client.target}: list 1: 3 instances (+3 -0)"
                    for r in caplog.records
                ),
                20,
            )
    [record] = [r for r in caplog.records if "list 1:" in r.getMessage()]
    assert record.name == "easdirect" and record.levelno == logging.INFO


def test_the_threshold_is_the_loggers_level_when_the_client_is_made(emulator):
    logger, lines = make_logger(logging.WARNING)
    with easdirect.Client(emulator.target(), failures_before_ejection=1, logger=logger) as client:
        logger.setLevel(logging.DEBUG)  # too late: the library sends warnings and errors only
        client.wait_ready(10)
        assert client.report_failure(client.select())  # an info line, were it sent
        emulator.set_fault("status", 503)
        lines.wait_for("discovery failed")  # a warning, after the ejection's info
        emulator.set_fault("none")
    assert {r.levelno for r in lines.records} == {logging.WARNING}, lines.messages()


def test_an_adapter_is_a_logger_too(emulator):
    logger, lines = make_logger(logging.INFO)
    adapter = logging.LoggerAdapter(logger, {"tenant": "t1"})
    with easdirect.Client(emulator.target(), logger=adapter) as client:
        client.wait_ready(10)
        lines.wait_for("list 1:")


def test_a_raising_logger_never_reaches_the_library(emulator, capsys):
    class Raising(logging.Logger):
        def __init__(self) -> None:
            super().__init__("easdirect-test-raising", logging.INFO)
            self.seen: List[str] = []

        def handle(self, record: logging.LogRecord) -> None:
            self.seen.append(record.getMessage())
            raise RuntimeError("this logger fails")

    logger = Raising()
    with easdirect.Client(emulator.target(), failures_before_ejection=1, logger=logger) as client:
        client.wait_ready(10)
        wait_for(lambda: any("list 1:" in m for m in logger.seen), 20)
        inst = client.select()
        client.report_failure(inst)
        # The log function goes on after an exception: the next line comes.
        wait_for(lambda: any(f"instance {inst.host} ejected" in m for m in logger.seen), 20)
        assert client.select() is not None
    err = capsys.readouterr().err
    assert "easdirect: the logger raised on the line" in err and "this logger fails" in err


def test_lines_beyond_ten_a_second_are_dropped_and_counted():
    logger, lines = make_logger(logging.INFO)
    fetches = itertools.count()

    def fetch():  # a new list at every fetch: a line each, 100 a second
        return [("127.0.0.1", 10000 + next(fetches) % 50000)]

    with easdirect.Client.from_source(fetch, refresh_interval_ms=10, logger=logger) as client:
        client.wait_ready(10)
        [line] = lines.wait_for("earlier lines dropped: at most 10 a second")[:1]
        assert "list " in line, line
        text = client.metrics_text()
        generation = client.stats().generation
    dropped = [l for l in text.splitlines() if l.startswith("easdirect_log_lines_dropped_total{")]
    assert len(dropped) == 1 and float(dropped[0].rsplit(" ", 1)[1]) > 0, dropped
    assert len(lines.messages("list ")) < generation


def test_the_logger_of_a_client_that_could_not_be_made_is_released():
    logger = logging.Logger("easdirect-test-refused")
    ref = weakref.ref(logger)
    before = len(_log_sink._registry)
    # The options took the log function, then the client was refused: freeing the options
    # let go of it.
    with pytest.raises(easdirect.InvalidArgumentError):
        easdirect.Client("bogus://127.0.0.1:1/svc", logger=logger)
    with pytest.raises(easdirect.InvalidArgumentError):
        easdirect.Client("static://127.0.0.1:1", refresh_interval_ms=1, logger=logger)
    del logger
    gc.collect()
    assert ref() is None and len(_log_sink._registry) == before


@pytest.mark.parametrize(
    "level, expected",
    [(logging.DEBUG, 4), (logging.INFO, 3), (logging.WARNING, 2), (logging.ERROR, 1),
     (logging.CRITICAL, 0), (logging.INFO + 5, 2)],
)
def test_max_level_follows_the_logger(level, expected):
    logger = logging.Logger("easdirect-test-level", level)
    assert _log_sink.max_level(logger) == expected
    logger.disabled = True
    assert _log_sink.max_level(logger) == 0


@pytest.mark.parametrize("bad", ["easdirect", True, 0, object()])
def test_a_logger_that_is_not_one_is_refused(bad):
    with pytest.raises(TypeError, match="logger must be"):
        easdirect.Client("static://127.0.0.1:1", logger=bad)
    with pytest.raises(TypeError, match="logger must be"):
        easdirect.Client.from_source(lambda: [], logger=bad)
