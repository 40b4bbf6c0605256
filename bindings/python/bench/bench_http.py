"""The HTTP helpers' overhead: each helper against its plain client, to the same zero-delay
loopback backend (the emulator's echo backend), in the same run.

Candidates, each a keep-alive client sending ``GET /x`` one request at a time:
- ``requests``: a plain ``requests.Session`` to ``http://127.0.0.1:P/x``, and
  ``easdirect.requests.session(client)`` to ``http://svc/x`` (one core call per request:
  begin, next, record, finish; URL rewrite, the load-report header asked and read);
- ``httpx``: a plain ``httpx.Client``, and one with ``easdirect.httpx.Transport``;
- ``httpx async``: a plain ``httpx.AsyncClient``, and one with ``AsyncTransport``.

The client is an ``eas://`` client of the emulator listing that one backend, with default
options. For each library the plain client and the helper send ``--requests`` requests each,
alternating request by request (which goes first alternates too), so that a slow moment of the
shared machine hits both alike. Figures, microseconds per request: the median wall time of
each, the median of the pairs' differences (the overhead), and the same for the client
thread's CPU time (``time.thread_time``: what the helper costs the caller's thread, without the
backend's and the scheduler's share).

    bindings/python/run-bench.sh http [--requests 2000] [--json out.json]
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
from typing import Any, Callable, Dict, List

import httpx
import requests
from requests.adapters import HTTPAdapter

import easdirect
import easdirect.httpx
import easdirect.requests
from easdirect import Outcome
from easdirect._http import HelperOptions, begin

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from conftest import Emulator  # noqa: E402 - the tests' emulator driver


def rounds(cands: Dict[str, Callable[[], None]], n: int) -> Dict[str, List[float]]:
    """``n`` requests of each candidate, interleaved (the order rotates each round); per
    request wall and thread CPU microseconds."""
    out: Dict[str, List[float]] = {}
    for name in cands:
        out[name] = []
        out[name + "_cpu"] = []
    names = list(cands)
    wall, cpu = time.perf_counter, time.thread_time
    for i in range(n):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            fn = cands[name]
            w, c = wall(), cpu()
            fn()
            out[name + "_cpu"].append((cpu() - c) * 1e6)
            out[name].append((wall() - w) * 1e6)
    return out


async def arounds(cands: Dict[str, Callable[[], Any]], n: int) -> Dict[str, List[float]]:
    out: Dict[str, List[float]] = {}
    for name in cands:
        out[name] = []
        out[name + "_cpu"] = []
    names = list(cands)
    wall, cpu = time.perf_counter, time.thread_time
    for i in range(n):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            fn = cands[name]
            w, c = wall(), cpu()
            await fn()
            out[name + "_cpu"].append((cpu() - c) * 1e6)
            out[name].append((wall() - w) * 1e6)
    return out


class RewriteAdapter(HTTPAdapter):
    """The floor of any requests adapter that rewrites: the URL to the backend, no call."""

    def __init__(self, host: str) -> None:
        super().__init__()
        self.host = host

    def send(self, request, **kw):  # type: ignore[override]
        attempt = request.copy()
        attempt.url = request.url.replace("//svc/", f"//{self.host}/", 1)
        return super().send(attempt, **kw)


class RewriteTransport(httpx.HTTPTransport):
    """The floor of any httpx transport that rewrites: a new request to the backend, no call."""

    def __init__(self, ip: str, port: int) -> None:
        super().__init__()
        self.ip, self.port = ip, port

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url.copy_with(host=self.ip, port=self.port)
        return super().handle_request(
            httpx.Request(request.method, url, headers=request.headers, stream=request.stream,
                          extensions=request.extensions)
        )


class AsyncRewriteTransport(httpx.AsyncHTTPTransport):
    def __init__(self, ip: str, port: int) -> None:
        super().__init__()
        self.ip, self.port = ip, port

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url.copy_with(host=self.ip, port=self.port)
        return await super().handle_async_request(
            httpx.Request(request.method, url, headers=request.headers, stream=request.stream,
                          extensions=request.extensions)
        )


def probe(client: easdirect.Client, request: Callable[[], None], n: int) -> Dict[str, float]:
    """Figures that tell where the overhead goes: the call cycle (``Client.call``, and the
    helpers' own call in C) run cold (right after a network round trip) and hot (right after
    another cycle); and the httpx transport's overhead without network (a ``MockTransport``
    inner, in a hot loop)."""
    cpu = time.thread_time

    def cycle() -> None:
        call = client.call(None)
        call.next()
        call.record(status=200, headers=[])
        call.close()

    opts = HelperOptions(client, aliases=["svc"])

    def helper_cycle() -> None:  # what the helpers run: the call in C (_fastpick.Call)
        call, _ = begin(opts, None, True)
        call.record(Outcome.RESPONSE, 200, None)
        call.close()

    cold: List[float] = []
    hot: List[float] = []
    hcold: List[float] = []
    hhot: List[float] = []
    for _ in range(n):
        for fn, c, h in ((cycle, cold, hot), (helper_cycle, hcold, hhot)):
            request()
            t = cpu()
            fn()
            c.append((cpu() - t) * 1e6)
            t = cpu()
            fn()
            h.append((cpu() - t) * 1e6)
    ip, port = client.instances()[0].ip, client.instances()[0].port

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'{"ok":true}')

    mock = httpx.MockTransport(answer)
    ours = easdirect.httpx.Transport(client, transport=mock)
    with httpx.Client() as builder:
        plain_req = builder.build_request("GET", f"http://{ip}:{port}/x")
        ours_req = builder.build_request("GET", "http://svc/x")

    def send(transport: httpx.BaseTransport, req: httpx.Request) -> None:
        resp = transport.handle_request(req)
        resp.read()
        resp.close()

    mp: List[float] = []
    mo: List[float] = []
    for _ in range(n):
        t = cpu()
        send(mock, plain_req)
        mp.append((cpu() - t) * 1e6)
        t = cpu()
        send(ours, ours_req)
        mo.append((cpu() - t) * 1e6)
    med = statistics.median
    return {
        "cycle_after_request_us": med(cold),
        "cycle_after_cycle_us": med(hot),
        "helper_cycle_after_request_us": med(hcold),
        "helper_cycle_after_cycle_us": med(hhot),
        "mock_plain_us": med(mp),
        "mock_easdirect_us": med(mo),
        "mock_overhead_us": med([o - p for o, p in zip(mo, mp)]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests of each candidate")
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
            floor_s = requests.Session()
            floor_s.mount("http://", RewriteAdapter(f"127.0.0.1:{port}"))
            plain_h = httpx.Client()
            ours_h = httpx.Client(transport=easdirect.httpx.Transport(client))
            floor_h = httpx.Client(transport=RewriteTransport("127.0.0.1", port))
            loop = asyncio.new_event_loop()

            async def make() -> "tuple[httpx.AsyncClient, ...]":
                return (
                    httpx.AsyncClient(),
                    httpx.AsyncClient(transport=easdirect.httpx.AsyncTransport(client)),
                    httpx.AsyncClient(transport=AsyncRewriteTransport("127.0.0.1", port)),
                )

            plain_a, ours_a, floor_a = loop.run_until_complete(make())

            def check(r) -> None:
                if r.status_code != 200:
                    raise SystemExit(f"unexpected status {r.status_code}")

            async def aget(http: httpx.AsyncClient, url: str) -> None:
                check(await http.get(url))

            n = args.requests
            runs: Dict[str, Dict[str, List[float]]] = {}
            sync = {
                "requests": {
                    "plain": lambda: check(plain_s.get(plain_url)),
                    "ours": lambda: check(ours_s.get(svc_url)),
                    "floor": lambda: check(floor_s.get(svc_url)),
                },
                "httpx": {
                    "plain": lambda: check(plain_h.get(plain_url)),
                    "ours": lambda: check(ours_h.get(svc_url)),
                    "floor": lambda: check(floor_h.get(svc_url)),
                },
            }
            for lib, cands in sync.items():
                rounds(cands, 50)  # warm-up: connections open, code paths hot
                runs[lib] = rounds(cands, n)
            acands = {
                "plain": lambda: aget(plain_a, plain_url),
                "ours": lambda: aget(ours_a, svc_url),
                "floor": lambda: aget(floor_a, svc_url),
            }
            loop.run_until_complete(arounds(acands, 50))
            runs["httpx async"] = loop.run_until_complete(arounds(acands, n))
            for http in (plain_a, ours_a, floor_a):
                loop.run_until_complete(http.aclose())
            loop.close()
            probes = probe(client, lambda: check(plain_s.get(plain_url)), n)
            assert sum(s.in_flight for s in client.instance_stats()) == 0
    finally:
        emu.stop()

    med = statistics.median
    print(
        f"us per request, medians of {n} requests each, interleaved (one echo backend on "
        "loopback, keep-alive, one request at a time); overhead: median of the differences "
        "with the plain request of the same round"
    )
    print(
        f"{'library':<12} {'plain':>7} {'easdirect':>9} {'overhead':>8} {'rewrite-only':>12}"
        f" {'its overhead':>12} | CPU: {'plain':>6} {'easdirect':>9} {'overhead':>8}"
        f" {'rewrite-only overhead':>21}"
    )
    out: Dict[str, Any] = {"requests": n, "figures": {}}
    for lib, r in runs.items():
        def over(a: str, b: str = "plain") -> float:
            return med([x - y for x, y in zip(r[a], r[b])])

        fig = {
            "plain_us": med(r["plain"]),
            "easdirect_us": med(r["ours"]),
            "overhead_us": over("ours"),
            "rewrite_only_us": med(r["floor"]),
            "rewrite_only_overhead_us": over("floor"),
            "cpu_plain_us": med(r["plain_cpu"]),
            "cpu_easdirect_us": med(r["ours_cpu"]),
            "cpu_overhead_us": over("ours_cpu", "plain_cpu"),
            "cpu_rewrite_only_overhead_us": over("floor_cpu", "plain_cpu"),
        }
        out["figures"][lib] = {k: round(v, 1) for k, v in fig.items()}
        print(
            f"{lib:<12} {fig['plain_us']:>7.1f} {fig['easdirect_us']:>9.1f}"
            f" {fig['overhead_us']:>8.1f} {fig['rewrite_only_us']:>12.1f}"
            f" {fig['rewrite_only_overhead_us']:>12.1f} |      {fig['cpu_plain_us']:>6.1f}"
            f" {fig['cpu_easdirect_us']:>9.1f} {fig['cpu_overhead_us']:>8.1f}"
            f" {fig['cpu_rewrite_only_overhead_us']:>21.1f}"
        )
    print(
        f"call cycle (call, next, record, close) right after a plain request: "
        f"{probes['cycle_after_request_us']:.1f} us CPU; right after another cycle: "
        f"{probes['cycle_after_cycle_us']:.1f} us"
    )
    print(
        f"the helpers' call in C (begin and next, record, close) right after a plain request: "
        f"{probes['helper_cycle_after_request_us']:.1f} us CPU; right after another: "
        f"{probes['helper_cycle_after_cycle_us']:.1f} us"
    )
    print(
        f"httpx without network (MockTransport inner, hot loop): plain {probes['mock_plain_us']:.1f}"
        f" us, easdirect {probes['mock_easdirect_us']:.1f} us, overhead "
        f"{probes['mock_overhead_us']:.1f} us CPU"
    )
    out["probes"] = {k: round(v, 1) for k, v in probes.items()}
    print(f"(python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f})")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
