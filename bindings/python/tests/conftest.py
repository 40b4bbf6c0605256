"""Shared fixtures: the project's EAS emulator (``easdirect emulate``) run as a subprocess and
driven over its control API, with real local HTTP backends registered under a service."""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]
EMULATOR_BIN = Path(os.environ.get("EASDIRECT_BIN") or REPO / "target" / "release" / "easdirect")
RESULTS_DIR = Path(
    os.environ.get("EASDIRECT_PY_RESULTS") or Path(__file__).resolve().parent.parent / ".results"
)

# The figures the comparison test records, printed at the end of the run.
COMPARISON: Dict[str, Any] = {}


class Emulator:
    """``easdirect emulate --listen 127.0.0.1:0 --service NAME --backends N``."""

    def __init__(self, service: str = "svc", backends: int = 3) -> None:
        if not EMULATOR_BIN.is_file():
            pytest.fail(f"{EMULATOR_BIN} not found: run `make build` (or set EASDIRECT_BIN)")
        self.service = service
        self.proc = subprocess.Popen(
            [
                str(EMULATOR_BIN),
                "emulate",
                "--listen",
                "127.0.0.1:0",
                "--service",
                service,
                "--backends",
                str(backends),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self._first_line(timeout=15.0)
        m = re.match(r"listening (\S+)", line)
        if not m:
            self.stop()
            pytest.fail(f"unexpected first line from the emulator: {line!r}")
        self.addr = m.group(1)
        # Keep reading its output so that it never blocks on a full pipe.
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=lambda s=stream: [None for _ in s], daemon=True).start()

    def _first_line(self, timeout: float) -> str:
        sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            self.stop()
            pytest.fail("the emulator printed nothing within 15 s")
        return self.proc.stdout.readline()

    def target(self, service: Optional[str] = None, refresh_interval_ms: int = 50, **q: Any) -> str:
        query = "&".join(
            f"{k}={v}" for k, v in {"refresh_interval_ms": refresh_interval_ms, **q}.items()
        )
        return f"eas://{self.addr}/{service or self.service}?{query}"

    def control(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://{self.addr}/_emulator/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: {e.code} {e.read()!r}") from None
        return json.loads(raw) if raw else None

    def set_fault(self, fault: str, status: Optional[int] = None) -> None:
        body: Dict[str, Any] = {"fault": fault}
        if status is not None:
            body["status"] = status
        self.control("PUT", "fault", body)

    def set_items(self, service: str, items: List[Dict[str, Any]]) -> None:
        self.control("PUT", f"services/{service}", items)

    def remove_service(self, service: str) -> None:
        self.control("DELETE", f"services/{service}")

    def add_backends(self, service: str, count: int, replace: bool = False) -> List[int]:
        out = self.control(
            "POST", "backends", {"service": service, "count": count, "replace": replace}
        )
        return [b["port"] for b in out]

    def set_backend(self, port: int, mode: str, status: Optional[int] = None) -> None:
        body: Dict[str, Any] = {"mode": mode}
        if status is not None:
            body["status"] = status
        self.control("PUT", f"backends/{port}", body)

    def backends(self, service: Optional[str] = None) -> List[Dict[str, Any]]:
        svc = service or self.service
        return [b for b in self.control("GET", "backends") if b.get("service") == svc]

    def ports(self, service: Optional[str] = None) -> List[int]:
        return [b["port"] for b in self.backends(service)]

    def hits(self, service: Optional[str] = None) -> Dict[int, int]:
        return {b["port"]: b["hits"] for b in self.backends(service)}

    def state(self) -> Dict[str, Any]:
        return self.control("GET", "state")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def emulator():
    emu = Emulator("svc", backends=3)
    try:
        yield emu
    finally:
        emu.stop()


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.01) -> Any:
    """Polls ``predicate`` until it returns something truthy; fails the test at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h or 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    if not COMPARISON:
        return
    tr = terminalreporter
    tr.section("easdirect vs eas-prediction (one of three instances answers 503, then dies)")
    for line in COMPARISON.get("table", []):
        tr.write_line(line)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / "sdk_comparison.json"
    out.write_text(json.dumps({k: v for k, v in COMPARISON.items() if k != "table"}, indent=2))
    tr.write_line(f"(recorded in {out})")
