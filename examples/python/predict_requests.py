"""Call a service through requests: the adapter picks an instance per request, retries a failed
call on a different instance, and reports every outcome.

    python examples/python/predict_requests.py eas://127.0.0.1:PORT/svc
"""

import sys

import easdirect
import easdirect.requests


def main(target: str) -> None:
    with easdirect.Client(target) as client:
        client.wait_ready(5.0)
        session = easdirect.requests.session(client)  # mounts easdirect.requests.Adapter
        url = f"http://{client.service}/api/predict/{client.service}"
        for i in range(6):
            r = session.post(url, json={"input": i}, timeout=5)
            print(r.status_code, r.easdirect_instance.host, r.text[:60])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "eas://127.0.0.1:8080/svc")
