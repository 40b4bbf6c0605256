"""Call a service through httpx, sync and async, with easdirect's transports.

    python examples/python/predict_httpx.py eas://127.0.0.1:PORT/svc
"""

import asyncio
import sys

import httpx

import easdirect
import easdirect.httpx


def main(target: str) -> None:
    with easdirect.Client(target) as client:
        client.wait_ready(5.0)
        url = f"http://{client.service}/api/predict/{client.service}"

        with httpx.Client(transport=easdirect.httpx.Transport(client), timeout=5) as http:
            for i in range(3):
                r = http.post(url, json={"input": i})
                print("sync ", r.status_code, r.extensions["easdirect.instance"].host)

        async def run() -> None:
            transport = easdirect.httpx.AsyncTransport(client)
            async with httpx.AsyncClient(transport=transport, timeout=5) as http:
                responses = await asyncio.gather(*(http.post(url, json={"i": i}) for i in range(6)))
                for r in responses:
                    print("async", r.status_code, r.extensions["easdirect.instance"].host)

        asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "eas://127.0.0.1:8080/svc")
