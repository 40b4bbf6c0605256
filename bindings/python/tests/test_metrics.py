"""The metrics text, read by prometheus_client's own parser, says what the stats say; the
collector serves it through a registry."""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from typing import Dict, Tuple

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import easdirect
import easdirect.prometheus

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def parse(text: str) -> Tuple[Dict[str, str], Samples]:
    """(family name -> type, (sample name, sorted labels) -> value), with the real parser."""
    types: Dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = s.value
    return types, samples


def test_the_metrics_text_parses_and_matches_the_stats(emulator):
    # No refresh during the test (the first fetch only), so the figures hold still.
    target = emulator.target(refresh_interval_ms=600000)
    with easdirect.Client(
        target, failures_before_ejection=1, ejection_base_ms=600000, ejection_max_ms=600000
    ) as client:
        client.wait_ready(10)
        for _ in range(6):
            with client.call() as call:
                call.next()
                time.sleep(0.002)  # a latency to average
                call.record(status=200)
                call.finish()
        with client.call() as call:
            ejected = call.next()
            call.record(status=503)  # a failed attempt
        assert client.report_failure(ejected)  # and a reported failure: ejected
        open_call = client.call()
        busy = open_call.next()  # in flight while the figures are read
        try:
            stats = client.stats()
            per_instance = client.instance_stats()
            text = client.metrics_text()
        finally:
            open_call.close()
        hosts = {i.id: i.host for i in client.instances()}

    types, samples = parse(text)
    t = (("target", client.target),)

    def one(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(dict(t, **labels).items())))]

    assert types["easdirect_list_generation"] == "gauge"
    assert types["easdirect_discovery_fetches"] == "counter"  # the parser drops "_total"
    assert types["easdirect_instance_attempts"] == "counter"
    assert one("easdirect_list_generation") == stats.generation == 1
    assert one("easdirect_instances") == stats.instances == 3
    assert one("easdirect_instances_ejected") == stats.ejected == 1
    assert one("easdirect_discovery_fetches_total", result="ok") == stats.refresh_ok >= 1
    assert one("easdirect_discovery_fetches_total", result="failed") == stats.refresh_failed
    assert one("easdirect_discovery_last_success_timestamp_seconds") == pytest.approx(
        stats.last_ok_unix_ms / 1000, abs=0.001
    )
    assert one("easdirect_push_connected") == 0
    assert one("easdirect_load_reports_malformed_total") == 0
    assert one("easdirect_log_lines_dropped_total") == 0

    assert len(per_instance) == 3
    assert sum(s.attempts for s in per_instance) == 8  # 6 + 1 + the open one
    for s in per_instance:
        i = dict(instance=hosts[s.id])
        assert one("easdirect_instance_weight", **i) == s.weight == 100
        assert one("easdirect_instance_attempts_total", **i) == s.attempts
        assert one("easdirect_instance_failures_total", **i) == s.failures
        assert one("easdirect_instance_in_flight", **i) == s.in_flight == (s.id == busy.id)
        assert one("easdirect_instance_latency_ewma_seconds", **i) == pytest.approx(
            s.latency_ewma_us / 1e6, abs=1e-6
        )
        held_out = s.id == ejected.id
        assert one("easdirect_instance_held_out", **i) == held_out == (s.ejected_until_unix_ms > 0)
        assert one("easdirect_instance_held_out_until_timestamp_seconds", **i) == pytest.approx(
            s.ejected_until_unix_ms / 1000, abs=0.001
        )
        assert one("easdirect_instance_reported_running", **i) == s.reported_running
        assert one("easdirect_instance_reported_waiting", **i) == s.reported_waiting
        assert one("easdirect_instance_reported_kv_cache_usage_ratio", **i) == pytest.approx(
            s.reported_kv_permille / 1000
        )
    assert [s.failures > 0 for s in per_instance] == [s.id == ejected.id for s in per_instance]
    assert any(s.latency_ewma_us > 0 for s in per_instance)
    # Every sample is the client's, and each per-instance one names a listed instance.
    assert {dict(labels)["target"] for _, labels in samples} == {client.target}
    named = {dict(labels).get("instance") for _, labels in samples} - {None}
    assert named == set(hosts.values())


def test_the_collector_serves_every_client_through_a_registry(emulator):
    eas = easdirect.Client(emulator.target(refresh_interval_ms=600000))
    static = easdirect.Client("static://127.0.0.1:1*300,127.0.0.1:2")
    try:
        eas.wait_ready(10)
        static.wait_ready(10)
        registry = CollectorRegistry(auto_describe=True)
        collector = easdirect.prometheus.Collector(eas)
        registry.register(collector)
        collector.add(static)
        collector.add(static)  # once only

        _, served = parse(generate_latest(registry).decode())
        _, own_eas = parse(eas.metrics_text())
        _, own_static = parse(static.metrics_text())
        assert served == {**own_eas, **own_static}
        assert served[
            ("easdirect_instance_weight",
             (("instance", "127.0.0.1:1"), ("target", static.target)))
        ] == 300
        assert served[("easdirect_instances", (("target", eas.target),))] == 3

        static.close()  # a closed client is left out
        _, served = parse(generate_latest(registry).decode())
        assert served == own_eas
        collector.remove(eas)
        assert generate_latest(registry) == b""
    finally:
        eas.close()
        static.close()


def test_the_metrics_text_of_a_closed_client_is_a_closed_error():
    client = easdirect.Client("static://127.0.0.1:1")
    assert "easdirect_instances" in client.metrics_text()
    client.close()
    with pytest.raises(easdirect.ClosedError, match="closed"):
        client.metrics_text()


def test_the_collector_takes_clients_only():
    with pytest.raises(TypeError, match="easdirect.Client"):
        easdirect.prometheus.Collector("static://127.0.0.1:1")  # type: ignore[arg-type]


def test_easdirect_does_not_need_prometheus_client():
    code = (
        "import sys, easdirect\n"
        "c = easdirect.Client('static://127.0.0.1:1')\n"
        "assert 'easdirect_instances' in c.metrics_text()\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False", out.stderr


def test_the_collector_module_says_what_to_install(monkeypatch):
    monkeypatch.delitem(sys.modules, "easdirect.prometheus")
    for name in [m for m in sys.modules if m.split(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)  # import of it fails: not installed
    with pytest.raises(ImportError, match="pip install prometheus_client"):
        importlib.import_module("easdirect.prometheus")
