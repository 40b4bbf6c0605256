"""Print the instance list each time it changes (a subscription), and the library's log lines
(a failing discovery, list changes, ejections...) as they come, for a number of seconds.

    python examples/python/watch.py eas://127.0.0.1:PORT/svc 10
"""

import logging
import sys
import time

import easdirect


def main(target: str, seconds: float) -> None:
    # The library's lines go to the logger "easdirect"; its level, when the client is made,
    # is the most verbose the library sends.
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s"
    )
    with easdirect.Client(target, refresh_interval_ms=500) as client:

        def on_change(instances):  # runs on a library thread
            hosts = ", ".join(f"{i.host}*{i.weight}" for i in instances)
            print(f"{len(instances)} instance(s): {hosts}", flush=True)

        with client.subscribe(on_change):
            time.sleep(seconds)
        err = client.last_error()
        if err is not None:
            print("last discovery error:", err)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 10.0)
