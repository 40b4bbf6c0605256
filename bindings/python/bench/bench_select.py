"""Pick cost: easdirect's ``Client.select()`` against eas-prediction's endpoint ``get()``.

Both pick from the same list of N instances (weight 100): easdirect through a ``static://``
target (the same snapshot and pick path as a discovered list), eas-prediction 0.36 through the
``Endpoint`` its direct mode (``CacheServerEndpoint``) fills after each discovery poll; its
``get()`` is what ``PredictClient.predict`` calls per request. For each N and thread count,
every thread runs ``--picks`` picks in a loop; the figure is wall time / total picks, the median
of ``--repeat`` runs.

Two more columns are the calling paths the binding was measured against, each doing the same
work (a pick into a fresh ``eas_instance``, id and host read): plain cffi (API mode; it releases
and re-takes the GIL around the call) and plain ctypes (``PyDLL``, which keeps the GIL, with
explicit argtypes). ``select()`` itself goes through ``easdirect._fastpick``: one C function
that keeps the GIL and returns a cached ``Instance``.

At 100 instances one more column, in the same interleaved runs: a call cycle, what a request
through ``Client.call`` costs the binding beyond its I/O. A fresh unkeyed call per iteration:
begin, ``next()``, ``record(status=200, headers=...)`` with a vLLM load report
(``endpoint-load-metrics: TEXT named_metrics.kv_cache_usage_perc=0.4,
named_metrics.num_requests_waiting=3.0``), ``finish(Body.DONE)``, ``close()``.

    bindings/python/run-bench.sh [--picks 100000] [--repeat 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import easdirect
from easdirect._native import ffi, lib

from eas_prediction.endpoint import Endpoint

SIZES = (3, 100, 1000)
THREADS = (1, 4)
#: The list size of the call-cycle column.
CALL_CYCLE_SIZE = 100
LOAD_REPORT = "TEXT named_metrics.kv_cache_usage_perc=0.4, named_metrics.num_requests_waiting=3.0"


def ips(n: int) -> list:
    return [f"10.{i // 62500}.{(i // 250) % 250}.{i % 250 + 1}" for i in range(n)]


class CInstance(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint64),
        ("ip", ctypes.c_char * 46),
        ("port", ctypes.c_uint16),
        ("weight", ctypes.c_uint32),
        ("host", ctypes.c_char * 64),
        ("reserved", ctypes.c_uint8 * 4),
    ]


def ctypes_pick(client: easdirect.Client):
    """``select`` over ctypes: what a ctypes binding would cost at best."""
    so = Path(easdirect.__file__).with_name("libeasdirect.so")
    lib = ctypes.PyDLL(str(so))  # keeps the GIL: cheaper than CDLL for a call this short
    sel = lib.eas_select_instance
    sel.argtypes = [ctypes.c_void_p, ctypes.POINTER(CInstance)]
    sel.restype = ctypes.c_int
    h = int(ffi.cast("uintptr_t", client._h))

    def pick():
        out = CInstance()
        if sel(h, out) != 0:
            raise RuntimeError("select failed")
        return out.id, out.host.decode()

    assert ctypes.sizeof(CInstance) == 128
    return pick


def cffi_pick(client: easdirect.Client):
    """``select`` through a plain cffi call (the GIL is released around it)."""
    sel, new, string, h = lib.eas_select_instance, ffi.new, ffi.string, client._h

    def pick():
        out = new("eas_instance *")
        if sel(h, out) != 0:
            raise RuntimeError("select failed")
        return out.id, string(out.host).decode()

    return pick


def call_cycle(client: easdirect.Client):
    """One request's worth of call API: begin, next, record 200 with a load report, finish
    DONE, free (the I/O between next and record left out)."""
    headers = {"endpoint-load-metrics": LOAD_REPORT}
    call, done = client.call, easdirect.Body.DONE

    def cycle():
        c = call()
        c.next()
        c.record(status=200, headers=headers)
        c.finish(done)
        c.close()

    return cycle


def measure(fn, picks: int, threads: int) -> float:
    """ns per pick: wall time of `threads` threads doing `picks` picks each."""
    start = threading.Barrier(threads + 1)

    def loop():
        start.wait()
        for _ in range(picks):
            fn()

    ts = [threading.Thread(target=loop) for _ in range(threads)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return (time.perf_counter() - t0) / (picks * threads) * 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--picks", type=int, default=100_000, help="picks per thread per run")
    ap.add_argument("--repeat", type=int, default=7, help="runs per figure (median)")
    ap.add_argument(
        "--json",
        type=Path,
        default=Path(__file__).resolve().parent.parent / ".results" / "bench.json",
    )
    args = ap.parse_args()

    logger = logging.getLogger("bench")
    results = []
    # Warm up the interpreter and the CPU before the first figure.
    with easdirect.Client("static://10.0.0.1:80,10.0.0.2:80") as warm:
        measure(warm.select, args.picks * 3, 1)
    for n in SIZES:
        hosts = ips(n)
        client = easdirect.Client("static://" + ",".join(f"{ip}:50000" for ip in hosts))
        client.wait_ready(0)
        sdk = Endpoint(logger)
        sdk.set_endpoints([({"ip": ip, "port": 50000}, 100) for ip in hosts])
        # Sanity: both cycle over every instance.
        assert len({client.select().host for _ in range(3 * n)}) == n
        assert len({sdk.get() for _ in range(3 * n)}) == n
        candidates = {
            "easdirect select()": client.select,
            "eas-prediction get()": sdk.get,
            "plain cffi": cffi_pick(client),
            "plain ctypes": ctypes_pick(client),
        }
        if n == CALL_CYCLE_SIZE:
            candidates["easdirect call cycle"] = call_cycle(client)
        for threads in THREADS:
            row = {"instances": n, "threads": threads}
            runs = {name: [] for name in candidates}
            for fn in candidates.values():
                measure(fn, max(1000, args.picks // 10), threads)  # warm-up
            for _ in range(args.repeat):  # interleaved, so that noise hits every candidate
                for name, fn in candidates.items():
                    runs[name].append(measure(fn, args.picks, threads))
            for name in candidates:
                row[name] = statistics.median(runs[name])
            results.append(row)
            print(
                f"  n={n:<5} threads={threads}  "
                + "  ".join(f"{k}: {v:.0f} ns" for k, v in row.items() if isinstance(v, float)),
                file=sys.stderr,
            )
        client.close()

    cpus = os.cpu_count()
    print()
    print(
        f"Pick cost, ns per pick (median of {args.repeat} runs of {args.picks:,} picks per "
        f"thread); Python {platform.python_version()}, {cpus} CPUs, easdirect "
        f"{easdirect.__version__} (libeasdirect {easdirect.library_version()}), eas-prediction 0.36"
    )
    print()
    print(
        "| instances | threads | easdirect select() | eas-prediction get() | ratio "
        "| plain cffi | plain ctypes |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        ours, sdk = r["easdirect select()"], r["eas-prediction get()"]
        print(
            f"| {r['instances']:,} | {r['threads']} | {ours:.0f} | {sdk:.0f} | {ours / sdk:.2f} "
            f"| {r['plain cffi']:.0f} | {r['plain ctypes']:.0f} |"
        )
    print()
    print("ratio = easdirect / eas-prediction (target: at most 0.5)")
    print()
    print(
        f"Call cycle at {CALL_CYCLE_SIZE} instances, ns per cycle (same runs as select()): begin, "
        "next, record 200 with a load report, finish DONE, close"
    )
    print()
    print("| threads | easdirect select() | call cycle | call cycle / select() |")
    print("|---:|---:|---:|---:|")
    for r in results:
        if "easdirect call cycle" in r:
            sel, cyc = r["easdirect select()"], r["easdirect call cycle"]
            print(f"| {r['threads']} | {sel:.0f} | {cyc:.0f} | {cyc / sel:.1f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"picks": args.picks, "repeat": args.repeat, "cpus": cpus, "results": results}, indent=2
        )
    )
    worst = max(r["easdirect select()"] / r["eas-prediction get()"] for r in results)
    print(f"worst ratio {worst:.2f}; figures in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
