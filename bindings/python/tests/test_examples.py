"""The examples in examples/python run against the emulator."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO

EXAMPLES = REPO / "examples" / "python"


@pytest.mark.parametrize(
    "script, extra, expect",
    [
        ("quickstart.py", [], "Stats("),
        ("predict_requests.py", [], "200 127.0.0.1:"),
        ("predict_httpx.py", [], "async 200"),
        ("watch.py", ["0.5"], "3 instance(s)"),
        ("watch.py", ["0.5"], "INFO easdirect: eas://127.0.0.1:"),
        ("metrics.py", [], 'easdirect_instances{target="eas://127.0.0.1:'),
    ],
)
def test_example_runs(emulator, script, extra, expect):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), emulator.target(), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert expect in proc.stdout, proc.stdout


def test_stream_llm_example(emulator):
    """Against two LLM backends: each session stays on one instance, in flight while it streams."""
    emulator.control(
        "POST", "backends",
        {"service": "svc", "count": 2, "kind": "llm", "replace": True,
         "llm": {"base_ms": 2, "per_token_ms": 2, "tokens_sigma": 0}},
    )
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "stream_llm.py"), emulator.target()],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "EAS_TOKEN": "example-token"},
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "example-token" not in out + proc.stderr
    hosts = {}
    for line in out.splitlines():
        helper, _, session, _, turn, rest = line.split(" ", 5)
        assert rest.startswith("8 tokens from 127.0.0.1:"), line
        hosts.setdefault(session, set()).add(rest.split()[3])
    assert sorted(hosts) == ["session-42", "session-7"], out
    assert all(len(h) == 1 for h in hosts.values()), out  # one instance per session
    assert "in flight while streaming: 1, after: 0" in out, out


def test_callback_source_example_demo():
    """Without arguments it writes, changes and removes its own instance file."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "callback_source.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "2 instance(s): 10.0.0.1:50000*100, 10.0.0.2:50000*300" in out, out
    assert "3 instance(s):" in out and "10.0.0.3:50000*100" in out, out
    assert "after the file was removed: 3 instance(s)" in out, out
    assert "FileNotFoundError" in out, out


def test_callback_source_example_reads_a_file(emulator, tmp_path):
    """With a file listing the emulator's backends (a sidecar's output, say)."""
    listing = tmp_path / "instances.txt"
    ports = emulator.ports()
    listing.write_text("".join(f"127.0.0.1:{p}\n" for p in ports) + "# the end\n")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "callback_source.py"), str(listing)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{len(ports)} instance(s)" in proc.stdout, proc.stdout
    assert "picks: 127.0.0.1:" in proc.stdout, proc.stdout
