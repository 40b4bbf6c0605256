"""Pick instances of a service and report how each call went.

    target/release/easdirect emulate --service svc --backends 3 &   # prints its target
    python examples/python/quickstart.py eas://127.0.0.1:PORT/svc
"""

import sys
import urllib.request

import easdirect


def main(target: str) -> None:
    with easdirect.Client(target, refresh_interval_ms=1000) as client:
        client.wait_ready(5.0)
        print("instances:", [i.host for i in client.instances()])
        for _ in range(6):
            inst = client.select()
            try:
                with urllib.request.urlopen(f"{inst.url}/api/predict/{client.service}", b"{}", 2) as r:
                    print(inst.host, r.status, r.read()[:60])
                client.report_success(inst.id)
            except OSError as e:
                print(inst.host, "failed:", e)
                client.report_failure(inst.id)
        print(client.stats())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "eas://127.0.0.1:8080/svc")
