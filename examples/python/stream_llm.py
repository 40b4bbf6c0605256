"""A streamed LLM call with a session key, through easdirect's requests and httpx helpers.

    EAS_TOKEN=... python examples/python/stream_llm.py eas://127.0.0.1:PORT/svc

The service's instances should speak an OpenAI-style completions API that streams SSE (the
emulator's LLM backends do, with the request header ``x-stream: true``). Every request of one
session carries ``X-Session-Id``: the library keys the call by it, so a session's requests go
to one instance (its KV cache holds the conversation) while the instance is not overloaded.
While an answer streams, its instance counts the request as in flight (the library balances
on that); the attempt ends when the stream is read to its end or closed.
"""

import asyncio
import json
import os
import sys
from typing import Optional

import httpx
import requests

import easdirect
import easdirect.httpx
import easdirect.requests


def in_flight(client: easdirect.Client) -> int:
    return sum(s.in_flight for s in client.instance_stats())


def text_of(line: str) -> Optional[str]:
    """The text of one SSE line (``data: {...}``), None for anything else or the end."""
    if not line.startswith("data: ") or line == "data: [DONE]":
        return None
    return json.loads(line[len("data: "):])["choices"][0]["text"]


def with_requests(client: easdirect.Client, token: Optional[str], session_id: str) -> None:
    session = easdirect.requests.session(client, token=token, affinity_header="X-Session-Id")
    url = f"http://{client.service}/v1/completions"
    for turn in range(2):
        body = {"prompt": f"turn {turn}", "max_tokens": 8, "stream": True}
        with session.post(
            url, json=body, headers={"X-Session-Id": session_id, "x-stream": "true"},
            stream=True, timeout=30,
        ) as resp:
            resp.raise_for_status()
            busy = in_flight(client)  # 1: the answer is streaming
            words = [t for t in map(text_of, resp.iter_lines(decode_unicode=True)) if t]
        print(f"requests session {session_id} turn {turn}: {len(words)} tokens from "
              f"{resp.easdirect_instance.host} (in flight while streaming: {busy}, "
              f"after: {in_flight(client)})")


async def with_httpx(client: easdirect.Client, token: Optional[str], session_id: str) -> None:
    transport = easdirect.httpx.AsyncTransport(
        client, token=token, affinity_header="X-Session-Id"
    )
    url = f"http://{client.service}/v1/completions"
    async with httpx.AsyncClient(transport=transport, timeout=30) as http:
        for turn in range(2):
            body = {"prompt": f"turn {turn}", "max_tokens": 8, "stream": True}
            headers = {"X-Session-Id": session_id, "x-stream": "true"}
            async with http.stream("POST", url, json=body, headers=headers) as resp:
                resp.raise_for_status()
                words = [t async for line in resp.aiter_lines() if (t := text_of(line))]
            host = resp.extensions["easdirect.instance"].host
            print(f"httpx session {session_id} turn {turn}: {len(words)} tokens from {host}")


def main(target: str, token: Optional[str]) -> None:
    with easdirect.Client(target) as client:
        client.wait_ready(5.0)
        try:
            with_requests(client, token, "session-42")
            asyncio.run(with_httpx(client, token, "session-7"))
        except (requests.RequestException, httpx.HTTPError) as e:
            sys.exit(f"request failed: {e}")


if __name__ == "__main__":
    # The token from the environment, not the command line (which other users can read).
    main(sys.argv[1] if len(sys.argv) > 1 else "eas://127.0.0.1:8080/svc", os.environ.get("EAS_TOKEN"))
