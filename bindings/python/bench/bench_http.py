"""The HTTP helpers' overhead: each helper against its plain client, to the same zero-delay
loopback backend (the emulator's echo backend), in the same run.

Candidates, each a keep-alive client sending ``GET /x`` one request at a time:
- ``requests``: a plain ``requests.Session`` to ``http://127.0.0.1:P/x``, and
  ``easdirect.requests.session(client)`` to ``http://svc/x`` (one core call per request:
  begin, next, record, finish; URL rewrite, the load-report header asked and read);
- ``httpx``: a plain ``httpx.Client``, and one with ``easdirect.httpx.Transport``;
- ``httpx async``: a plain ``httpx.AsyncClient``, and one with ``AsyncTransport``.

The client is an ``eas://`` client of the emulator listing that one backend, with default
options. A run times ``--requests`` requests of each candidate in turn (the order rotates run
by run); a figure is the median over ``--repeat`` runs of wall time / requests. The overhead is
helper minus plain: the difference of the medians, and the median of the per-run differences.

    bindings/python/run-bench.sh http [--requests 400] [--repeat 9] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import httpx
import requests

import easdirect
import easdirect.httpx
import easdirect.requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from conftest import Emulator  # noqa: E402 - the tests' emulator driver


def timed(fn: Callable[[], None], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=400, help="requests per candidate per run")
    ap.add_argument("--repeat", type=int, default=9, help="runs (the figure is their median)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    emu = Emulator("svc", backends=1)
    try:
        port = emu.ports()[0]
        plain_url = f"http://127.0.0.1:{port}/x"
        svc_url = "http://svc/x"
        with easdirect.Client(emu.target(refresh_interval_ms=1000)) as client:
            client.wait_ready(5)
            plain_s = requests.Session()
            ours_s = easdirect.requests.session(client)
            plain_h = httpx.Client()
            ours_h = httpx.Client(transport=easdirect.httpx.Transport(client))
            loop = asyncio.new_event_loop()

            async def make() -> "tuple[httpx.AsyncClient, httpx.AsyncClient]":
                return (
                    httpx.AsyncClient(),
                    httpx.AsyncClient(transport=easdirect.httpx.AsyncTransport(client)),
                )

            plain_a, ours_a = loop.run_until_complete(make())

            def check(r) -> None:
                if r.status_code != 200:
                    raise SystemExit(f"unexpected status {r.status_code}")

            def run_async(http: httpx.AsyncClient, url: str, n: int) -> float:
                async def go() -> float:
                    start = time.perf_counter()
                    for _ in range(n):
                        check(await http.get(url))
                    return (time.perf_counter() - start) / n * 1e6

                return loop.run_until_complete(go())

            candidates: Dict[str, Callable[[int], float]] = {
                "requests plain": lambda n: timed(lambda: check(plain_s.get(plain_url)), n),
                "requests easdirect": lambda n: timed(lambda: check(ours_s.get(svc_url)), n),
                "httpx plain": lambda n: timed(lambda: check(plain_h.get(plain_url)), n),
                "httpx easdirect": lambda n: timed(lambda: check(ours_h.get(svc_url)), n),
                "httpx async plain": lambda n: run_async(plain_a, plain_url, n),
                "httpx async easdirect": lambda n: run_async(ours_a, svc_url, n),
            }
            names = list(candidates)
            for name in names:  # warm-up: connections open, code paths hot
                candidates[name](50)
            runs: Dict[str, List[float]] = {name: [] for name in names}
            for r in range(args.repeat):
                # Pairs stay together (plain, then its helper, or the reverse), pair order
                # rotating, so that a slow moment hits both of a pair.
                pairs = [names[i : i + 2] for i in range(0, len(names), 2)]
                pairs = pairs[r % len(pairs) :] + pairs[: r % len(pairs)]
                for pair in pairs:
                    for name in pair if r % 2 == 0 else reversed(pair):
                        runs[name].append(candidates[name](args.requests))
            loop.run_until_complete(plain_a.aclose())
            loop.run_until_complete(ours_a.aclose())
            loop.close()
            assert sum(s.in_flight for s in client.instance_stats()) == 0
    finally:
        emu.stop()

    print(
        f"us per request, median of {args.repeat} runs of {args.requests} requests "
        f"(one echo backend on loopback, keep-alive, one request at a time)"
    )
    print(f"{'helper':<12} {'plain':>8} {'easdirect':>10} {'overhead':>9} {'per-run median':>15}")
    out = {"requests_per_run": args.requests, "runs": args.repeat, "figures": {}}
    for lib in ("requests", "httpx", "httpx async"):
        plain, ours = runs[f"{lib} plain"], runs[f"{lib} easdirect"]
        mp, mo = statistics.median(plain), statistics.median(ours)
        paired = statistics.median(o - p for o, p in zip(ours, plain))
        print(f"{lib:<12} {mp:>8.1f} {mo:>10.1f} {mo - mp:>9.1f} {paired:>15.1f}")
        out["figures"][lib] = {
            "plain_us": round(mp, 1),
            "easdirect_us": round(mo, 1),
            "overhead_us": round(mo - mp, 1),
            "overhead_paired_us": round(paired, 1),
        }
    print(f"(python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f})")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
