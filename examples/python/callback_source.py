"""A client whose instances come from your own code instead of a target: here a file that some
other process (a sidecar, a deploy script) rewrites, one ``ip:port[ weight]`` a line, read again
at each refresh. Without a file, it writes one, changes it and removes it, to show that the
client follows the list and keeps the last one when the source fails.

    python examples/python/callback_source.py                 # the self-contained demo
    python examples/python/callback_source.py instances.txt   # your own file
"""

import logging
import os
import sys
import tempfile
import time

import easdirect


def file_source(path):
    """The source function: called on a library thread at each refresh."""

    def fetch():
        with open(path) as f:  # a missing file raises: a failed fetch, the last list is kept
            for line in f:
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                host, _, weight = line.partition(" ")
                ip, _, port = host.rpartition(":")
                yield easdirect.Endpoint(ip, int(port), int(weight or easdirect.DEFAULT_WEIGHT))

    return fetch


def show(client, picks=6):
    hosts = ", ".join(f"{i.host}*{i.weight}" for i in client.instances())
    print(f"{len(client.instances())} instance(s): {hosts}", flush=True)
    print("picks:", " ".join(client.select().host for _ in range(picks)), flush=True)


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)


def demo():
    fd, path = tempfile.mkstemp(suffix=".txt")
    os.close(fd)
    with open(path, "w") as f:
        f.write("10.0.0.1:50000\n10.0.0.2:50000 300   # three times the default weight\n")
    try:
        with easdirect.Client.from_source(file_source(path), refresh_interval_ms=100) as client:
            client.wait_ready(5)
            show(client)
            with open(path, "a") as f:  # the sidecar adds an instance
                f.write("10.0.0.3:50000\n")
            wait_until(lambda: len(client.instances()) == 3)
            show(client)
            os.remove(path)  # the source fails: the last list is kept
            wait_until(lambda: client.last_error() is not None)
            print("after the file was removed:", len(client.instances()), "instance(s)")
            print("last error:", client.last_error())
    finally:
        if os.path.exists(path):
            os.remove(path)


def main(path):
    with easdirect.Client.from_source(file_source(path), refresh_interval_ms=1000) as client:
        client.wait_ready(5)
        show(client)


if __name__ == "__main__":
    # A failing source function is logged to the "easdirect" logger, with its traceback.
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        demo()
