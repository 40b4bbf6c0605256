"""Serve a client's metrics to Prometheus with prometheus_client, and scrape them once.

    pip install prometheus_client
    python examples/python/metrics.py eas://127.0.0.1:PORT/svc [seconds to keep serving]
"""

import sys
import time
import urllib.request

import prometheus_client

import easdirect
import easdirect.prometheus


def main(target: str, seconds: float) -> None:
    with easdirect.Client(target) as client:
        client.wait_ready(5.0)
        # One collector for every client of the process (each sample has a target label).
        collector = easdirect.prometheus.Collector(client)
        prometheus_client.REGISTRY.register(collector)
        server, _ = prometheus_client.start_http_server(0, addr="127.0.0.1")
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        print("serving", url, flush=True)
        with urllib.request.urlopen(url, timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(("easdirect_instances", "easdirect_instance_weight")):
                    print(line)
        time.sleep(seconds)
        server.shutdown()
        prometheus_client.REGISTRY.unregister(collector)
    # Without prometheus_client: client.metrics_text() is the same text, ready to serve.


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
