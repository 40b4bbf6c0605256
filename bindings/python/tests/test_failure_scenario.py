"""The failure scenario of ``test_sdk_comparison`` through each Python helper: one of three
instances answers 503, then dies (refused connections while discovery still lists it), then
discovery answers an empty list. No request may fail in any phase."""

from __future__ import annotations

import asyncio

import httpx
import pytest

import easdirect
import easdirect.httpx as edh
import easdirect.requests as edr

from conftest import Emulator, wait_for
from test_sdk_comparison import run_phases

URL = "http://svc/api/predict/svc"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("helper", ["python_requests", "python_httpx", "python_httpx_async"])
def test_no_request_lost(helper):
    emu = Emulator("svc", 3)
    try:
        with easdirect.Client(emu.target()) as client:
            client.wait_ready(5)

            def wait_for_empty() -> None:
                failed = client.stats().refresh_failed
                wait_for(lambda: client.stats().refresh_failed >= failed + 2)

            if helper == "python_requests":
                with edr.session(client) as s:
                    got = run_phases(
                        emu,
                        lambda: s.post(URL, data=b"payload", timeout=2).status_code == 200,
                        wait_for_empty,
                    )
            elif helper == "python_httpx":
                with httpx.Client(transport=edh.Transport(client), timeout=2) as http:
                    got = run_phases(
                        emu,
                        lambda: http.post(URL, content=b"payload").status_code == 200,
                        wait_for_empty,
                    )
            else:
                loop = asyncio.new_event_loop()
                try:

                    async def make() -> httpx.AsyncClient:
                        return httpx.AsyncClient(transport=edh.AsyncTransport(client), timeout=2)

                    http = loop.run_until_complete(make())

                    async def send() -> bool:
                        # Four at once, as async callers do: every one must succeed.
                        rs = await asyncio.gather(
                            *(http.post(URL, content=b"payload") for _ in range(4))
                        )
                        return all(r.status_code == 200 for r in rs)

                    got = run_phases(emu, lambda: loop.run_until_complete(send()), wait_for_empty)
                    loop.run_until_complete(http.aclose())
                finally:
                    loop.close()
            assert got == {"503": 0, "dead": 0, "empty": 0}
            assert sum(s.in_flight for s in client.instance_stats()) == 0
    finally:
        emu.stop()
