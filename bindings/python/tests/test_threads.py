"""Threads picking while the instance list changes under them."""

from __future__ import annotations

import threading
import time

import easdirect

from conftest import fnv1a64, wait_for


def test_threads_pick_while_the_list_changes(emulator):
    # Lists of made-up instances (never contacted) with weights that change between lists.
    lists = []
    for k in range(8):
        items = [
            {"ip": f"10.0.{k % 3}.{i}", "port": 50000 + (k % 2), "weight": 50 + 10 * ((i + k) % 4)}
            for i in range(1, 4 + 2 * k)
        ]
        lists.append(items)
    valid = {}
    for items in lists:
        for it in items:
            valid.setdefault(f"{it['ip']}:{it['port']}", set()).add(it["weight"])

    emulator.set_items("churn", lists[0])
    stop = threading.Event()
    errors = []
    picks = [0] * 4

    with easdirect.Client(emulator.target("churn", refresh_interval_ms=10)) as c:
        c.wait_ready(5)
        changes = []
        sub = c.subscribe(lambda insts: changes.append(len(insts)))

        def picker(slot):
            try:
                n = 0
                while not stop.is_set():
                    inst = c.select()
                    assert inst.host == f"{inst.ip}:{inst.port}", inst
                    assert inst.host in valid, inst
                    assert inst.weight in valid[inst.host], inst
                    assert inst.id == fnv1a64(inst.host.encode()), inst
                    if n % 50 == 0:
                        other = c.select_excluding(inst)
                        assert other.id != inst.id
                        assert all(i.host in valid for i in c.instances())
                        c.report_success(inst)
                    n += 1
                picks[slot] = n
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=picker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        generation = c.stats().generation
        deadline = time.monotonic() + 1.5
        k = 0
        while time.monotonic() < deadline:
            k += 1
            emulator.set_items("churn", lists[k % len(lists)])
            time.sleep(0.03)
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        assert all(n > 100 for n in picks), picks
        assert c.stats().generation >= generation + 5
        wait_for(lambda: len(changes) >= 3)
        sub.cancel()


def test_close_while_threads_pick():
    c = easdirect.Client("static://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3")
    outcomes = []
    started = threading.Barrier(5)

    def picker():
        started.wait()
        try:
            while True:
                c.select()
        except easdirect.ClosedError as e:
            outcomes.append(e.code)

    threads = [threading.Thread(target=picker) for _ in range(4)]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(0.05)
    c.close()
    for t in threads:
        t.join(5)
    assert outcomes == [easdirect.Status.CLOSED] * 4
