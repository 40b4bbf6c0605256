"""The examples in examples/python run against the emulator."""

from __future__ import annotations

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
