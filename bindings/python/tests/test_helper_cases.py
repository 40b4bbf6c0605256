"""The HTTP helpers' case table (``tests/helpers/cases.json`` at the repository root, schema in
``tests/helpers/README.md``) run against the emulator's backends for each Python helper:
``python_requests`` (easdirect.requests), ``python_httpx`` (easdirect.httpx.Transport) and
``python_httpx_async`` (easdirect.httpx.AsyncTransport)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import httpx
import pytest
import requests

import easdirect
import easdirect.httpx as edh
import easdirect.requests as edr

from conftest import REPO, Emulator

TABLE = json.loads((REPO / "tests" / "helpers" / "cases.json").read_text())
SERVICE = TABLE["service"]
RUNNERS = ("python_requests", "python_httpx", "python_httpx_async")
assert TABLE["schema"] == 1, "cases.json has a schema this runner does not know"


def _case_params():
    for case in TABLE["cases"]:
        for runner in RUNNERS:
            yield pytest.param(runner, case, id=f"{runner}-{case['name']}")


def _form_params():
    for form in TABLE["forms"]:
        for runner in RUNNERS:
            yield pytest.param(runner, form, id=f"{runner}-{form['target']}")


def helper_options(spec: Dict[str, Any]) -> Dict[str, Any]:
    """The table's helper options as keyword arguments of the Python helpers."""
    opts = dict(spec)
    if "attempt_timeout_ms" in opts:
        opts["attempt_timeout"] = opts.pop("attempt_timeout_ms") / 1000
    return opts


class Outcome:
    """What one request through a helper gave."""

    def __init__(self) -> None:
        self.status: Optional[int] = None
        self.body: bytes = b""
        self.error: Optional[BaseException] = None
        self.in_flight_during_body: Optional[int] = None

    def json(self) -> Any:
        return json.loads(self.body)


def in_flight(client: easdirect.Client) -> int:
    return sum(s.in_flight for s in client.instance_stats())


def make_body(spec: Optional[Dict[str, Any]], tmp_path, asynchronous: bool) -> Any:
    if spec is None:
        return None
    size = spec["size"]
    kind = spec["kind"]
    if kind == "bytes":
        return b"x" * size
    if kind == "file":
        path = tmp_path / f"body-{time.monotonic_ns()}.bin"
        path.write_bytes(b"x" * size)
        if asynchronous:
            import anyio

            return anyio.open_file(path, "rb")  # awaited by the runner
        return path.open("rb")
    if kind == "stream":
        sizes = [100] * (size // 100) + ([size % 100] if size % 100 else [])
        if asynchronous:

            async def agen():
                for n in sizes:
                    yield b"x" * n

            return agen()
        return (b"x" * n for n in sizes)
    raise AssertionError(f"unknown body kind {kind!r}")


def send_requests(
    session: requests.Session, req: Dict[str, Any], url: str, body: Any, client
) -> Outcome:
    out = Outcome()
    try:
        resp = session.request(
            req["method"], url, headers=req.get("headers") or {}, data=body,
            stream=bool(req.get("stream")),
        )
    except BaseException as e:  # noqa: BLE001 - what the case checks
        out.error = e
        return out
    with resp:
        out.status = resp.status_code
        if req.get("stream"):
            out.in_flight_during_body = in_flight(client)
            out.body = b"".join(resp.iter_content(None))
        else:
            out.body = resp.content
    return out


def send_httpx(http: httpx.Client, req: Dict[str, Any], url: str, body: Any, client) -> Outcome:
    out = Outcome()
    try:
        request = http.build_request(
            req["method"], url, headers=req.get("headers") or {}, content=body
        )
        resp = http.send(request, stream=bool(req.get("stream")))
    except BaseException as e:  # noqa: BLE001
        out.error = e
        return out
    try:
        out.status = resp.status_code
        if req.get("stream"):
            out.in_flight_during_body = in_flight(client)
            out.body = b"".join(resp.iter_bytes())
        else:
            out.body = resp.content
    finally:
        resp.close()
    return out


async def send_httpx_async(
    http: httpx.AsyncClient, req: Dict[str, Any], url: str, body: Any, client
) -> Outcome:
    out = Outcome()
    try:
        if hasattr(body, "__await__"):
            body = await body  # anyio.open_file
        request = http.build_request(
            req["method"], url, headers=req.get("headers") or {}, content=body
        )
        resp = await http.send(request, stream=bool(req.get("stream")))
    except BaseException as e:  # noqa: BLE001 - asyncio.CancelledError included
        out.error = e
        return out
    try:
        out.status = resp.status_code
        if req.get("stream"):
            out.in_flight_during_body = in_flight(client)
            out.body = b"".join([c async for c in resp.aiter_bytes()])
        else:
            out.body = resp.content
    finally:
        await resp.aclose()
    return out


class Case:
    """One case's emulator, backends and client."""

    def __init__(self, case: Dict[str, Any]) -> None:
        self.case = case
        self.emu = Emulator(SERVICE, backends=0)
        try:
            self.passthrough_port = self.emu.add_backends("passthrough", 1)[0]
            self.ports: List[int] = []
            for i, spec in enumerate(case["backends"]):
                body: Dict[str, Any] = {"service": SERVICE, "count": 1, "replace": i == 0}
                if "llm" in spec:
                    body.update(kind="llm", llm=spec["llm"])
                port = self.emu.control("POST", "backends", body)[0]["port"]
                mode = {k: v for k, v in spec.items() if k != "llm"}
                if mode != {"mode": "ok"}:
                    self.emu.control("PUT", f"backends/{port}", mode)
                self.ports.append(port)
            options = case.get("client_options") or {}
            if case.get("client", "eas") == "static":
                target = "static://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)
                self.client = easdirect.Client(target, **options)
            else:
                self.client = easdirect.Client(
                    self.emu.target(SERVICE, refresh_interval_ms=50), **options
                )
                self.client.wait_ready(5)
                want = sorted(self.ports)
                deadline = time.monotonic() + 5
                while sorted(i.port for i in self.client.instances()) != want:
                    assert time.monotonic() < deadline, "the client's list never matched"
                    time.sleep(0.01)
        except BaseException:
            self.emu.stop()
            raise

    def host(self, host: str) -> str:
        return (
            host.replace("{service}", SERVICE)
            .replace("{passthrough_named}", f"localhost:{self.passthrough_port}")
            .replace("{passthrough}", f"127.0.0.1:{self.passthrough_port}")
        )

    def backends(self) -> List[Dict[str, Any]]:
        by_port = {b["port"]: b for b in self.emu.control("GET", "backends")}
        return [by_port[p] for p in self.ports]

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            self.emu.stop()


def run_during(
    during: List[Dict[str, Any]], c: Case, cancel: Optional[Callable[[], None]]
) -> threading.Thread:
    """Plays the case's ``during`` actions on a thread, from now."""
    start = time.monotonic()

    def play() -> None:
        for action in sorted(during, key=lambda a: a["after_ms"]):
            delay = start + action["after_ms"] / 1000 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if action["do"] == "close_client":
                c.client.close()
            elif action["do"] == "set_backends":
                for port, mode in zip(c.ports, action["modes"]):
                    c.emu.control("PUT", f"backends/{port}", mode)
            elif action["do"] == "cancel":
                assert cancel is not None, "no way to cancel in this runner"
                cancel()
            else:
                raise AssertionError(f"unknown action {action['do']!r}")

    t = threading.Thread(target=play, daemon=True)
    t.start()
    return t


def run_case(runner: str, case: Dict[str, Any], tmp_path) -> None:
    skip = (case.get("skip") or {}).get(runner)
    if skip:
        pytest.skip(skip)
    c = Case(case)
    try:
        check(runner, case, c, tmp_path)
    finally:
        c.close()


def check(runner: str, case: Dict[str, Any], c: Case, tmp_path) -> None:
    req = case["request"]
    expect = case["expect"]
    opts = helper_options(case.get("helper") or {})
    url = f"http://{c.host(req['host'])}{req['path']}"
    repeat = case.get("repeat", 1)
    during = case.get("during") or []
    closes_client = any(a["do"] == "close_client" for a in during)
    outs: List[Outcome] = []
    player: Optional[threading.Thread] = None
    asynchronous = runner == "python_httpx_async"

    def body() -> Any:
        return make_body(req.get("body"), tmp_path, asynchronous)

    if runner == "python_requests":
        with edr.session(c.client, **opts) as s:
            for i in range(repeat):
                if i == 0 and during:
                    player = run_during(during, c, None)
                outs.append(send_requests(s, req, url, body(), c.client))
                assert closes_client or in_flight(c.client) == 0, "an attempt leaked"
    elif runner == "python_httpx":
        transport = edh.Transport(c.client, **opts)
        with httpx.Client(transport=transport, timeout=30) as http:
            for i in range(repeat):
                if i == 0 and during:
                    player = run_during(during, c, None)
                outs.append(send_httpx(http, req, url, body(), c.client))
                assert closes_client or in_flight(c.client) == 0, "an attempt leaked"
    else:

        async def main() -> None:
            nonlocal player
            loop = asyncio.get_running_loop()
            transport = edh.AsyncTransport(c.client, **opts)
            async with httpx.AsyncClient(transport=transport, timeout=30) as http:
                for i in range(repeat):
                    task = asyncio.ensure_future(
                        send_httpx_async(http, req, url, body(), c.client)
                    )
                    if i == 0 and during:
                        player = run_during(
                            during, c, lambda: loop.call_soon_threadsafe(task.cancel)
                        )
                    try:
                        outs.append(await task)
                    except asyncio.CancelledError as e:
                        out = Outcome()
                        out.error = e
                        outs.append(out)
                    assert closes_client or in_flight(c.client) == 0, "an attempt leaked"

        asyncio.run(main())
    if player is not None:
        player.join(10)

    last = outs[-1]
    if "error" in expect:
        kind = expect["error"]
        assert last.error is not None, f"expected a {kind} error, got status {last.status}"
        assert_error_kind(runner, kind, last.error)
    else:
        assert last.error is None, f"expected a response, got {last.error!r}"
        assert all(o.error is None for o in outs), [o.error for o in outs if o.error]
    if "status" in expect:
        assert last.status == expect["status"], last.body[:200]
    backends = c.backends()
    hits = sum(b["hits"] for b in backends)
    if "hits" in expect:
        want = expect["hits"]
        lo, hi = (want, want) if isinstance(want, int) else want
        assert lo <= hits <= hi, f"hits {hits}, expected {want}"
    if "received" in expect:
        check_received(expect["received"], backends)
    if expect.get("passthrough"):
        assert last.json()["backend"] == f"127.0.0.1:{c.passthrough_port}"
    if "from_backend" in expect:
        assert last.json()["backend"] == f"127.0.0.1:{c.ports[expect['from_backend']]}"
    distinct = sum(1 for b in backends if b["hits"] > 0)
    if "distinct_backends" in expect:
        assert distinct == expect["distinct_backends"], [b["hits"] for b in backends]
    if "distinct_backends_min" in expect:
        assert distinct >= expect["distinct_backends_min"], [b["hits"] for b in backends]
    if any(k in expect for k in ("backing_off", "backoff_s", "load_report_seen")):
        stats = c.client.instance_stats()
        now_ms = time.time() * 1000
        backing = [s for s in stats if s.ejected_until_unix_ms > now_ms]
        if "backing_off" in expect:
            assert len(backing) == expect["backing_off"], stats
        if "backoff_s" in expect:
            lo, hi = expect["backoff_s"]
            for s in backing:
                assert lo <= (s.ejected_until_unix_ms - now_ms) / 1000 <= hi, s
        if "load_report_seen" in expect:
            assert any(s.report_unix_ms > 0 for s in stats) == expect["load_report_seen"], stats
    if "in_flight_during_body" in expect:
        assert last.in_flight_during_body == expect["in_flight_during_body"]
    if "body_contains" in expect:
        assert expect["body_contains"].encode() in last.body, last.body[-200:]


def assert_error_kind(runner: str, kind: str, error: BaseException) -> None:
    sync_requests = runner == "python_requests"
    if kind == "any":
        return
    if kind == "no_instance":
        assert isinstance(error, easdirect.NoInstanceError), repr(error)
        cls = edr.NoInstanceAvailable if sync_requests else edh.NoInstanceAvailable
        assert isinstance(error, cls), repr(error)
    elif kind == "timeout":
        cls = requests.exceptions.Timeout if sync_requests else httpx.TimeoutException
        assert isinstance(error, cls), repr(error)
    elif kind == "cancelled":
        assert isinstance(error, asyncio.CancelledError), repr(error)
    elif kind == "transport":
        if sync_requests:
            ok = isinstance(error, requests.exceptions.ConnectionError) and not isinstance(
                error, requests.exceptions.Timeout
            )
        else:
            ok = isinstance(error, httpx.TransportError) and not isinstance(
                error, httpx.TimeoutException
            )
        assert ok, repr(error)
        assert not isinstance(error, easdirect.NoInstanceError), repr(error)
    else:
        raise AssertionError(f"unknown error kind {kind!r} in cases.json")


def check_received(want: Dict[str, Any], backends: List[Dict[str, Any]]) -> None:
    received = [r for b in backends for r in b.get("requests") or []]
    assert received, "no service backend received a request"
    for r in received:
        for field in ("method", "path", "body_len"):
            if field in want:
                assert r[field] == want[field], (field, r)
        for name, value in (want.get("headers") or {}).items():
            assert r["headers"].get(name) == value, (name, r["headers"])
        for name in want.get("absent_headers") or ():
            assert name not in r["headers"], (name, r["headers"])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("runner, case", list(_case_params()))
def test_case(runner: str, case: Dict[str, Any], tmp_path) -> None:
    run_case(runner, case, tmp_path)


def attempts(client: easdirect.Client) -> int:
    return sum(s.attempts for s in client.instance_stats())


@pytest.mark.parametrize("runner, form", list(_form_params()))
def test_target_form(runner: str, form: Dict[str, Any]) -> None:
    """A host naming the service is rewritten: the request goes through the client. With no
    instance that is the no-instance error, and no connection to that host; a ``static://``
    list holds its (refusing) instance, so there it is a refused connection to that instance,
    counted as an attempt of the client's call."""
    with easdirect.Client(form["target"]) as client:
        assert (client.service or "") == form["service"]
        if form["target"].startswith("static://"):
            client.wait_ready(5)
        opts = {"aliases": form["aliases"]} if "aliases" in form else {}
        for host in form["rewrite"]:
            url = f"http://{host}/v1/x"
            before = attempts(client)
            error: Optional[BaseException] = None
            if runner == "python_requests":
                try:
                    edr.session(client, **opts).get(url)
                except requests.exceptions.RequestException as e:
                    error = e
            elif runner == "python_httpx":
                with httpx.Client(transport=edh.Transport(client, **opts)) as http:
                    try:
                        http.get(url)
                    except httpx.HTTPError as e:
                        error = e
            else:

                async def main() -> Optional[BaseException]:
                    transport = edh.AsyncTransport(client, **opts)
                    async with httpx.AsyncClient(transport=transport) as http:
                        try:
                            await http.get(url)
                        except httpx.HTTPError as e:
                            return e
                    return None

                error = asyncio.run(main())
            assert error is not None, f"{host}: a response from nowhere"
            if client.instances():
                assert attempts(client) > before, f"{host}: not sent through the client: {error!r}"
            else:
                assert isinstance(error, easdirect.NoInstanceError), f"{host}: {error!r}"
