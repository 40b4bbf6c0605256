"""easdirect: call a PAI-EAS service directly over the VPC, without the gateway.

A Python binding of libeasdirect (a Rust library with a C ABI): a background thread keeps the
service's instance list fresh, :meth:`Client.select` picks one per request by weighted
round-robin without taking a lock, and instances reported as failing are ejected.

    import easdirect
    with easdirect.Client("eas://1.2.3.4:8080/my_service") as client:
        client.wait_ready(2.0)
        inst = client.select()
        ...  # POST http://{inst.host}/api/predict/my_service
        client.report_success(inst.id)   # or report_failure(inst.id)

Instances from your own registry: ``easdirect.Client.from_source(fetch)``, where ``fetch()``
returns ``(ip, port[, weight])`` tuples and runs on a library thread at each refresh.

Calls, for a request loop over your own HTTP stack with load-aware picks, retries and affinity
decided by the library: ``with client.call(key=...) as call:`` then ``call.next()``,
``call.record(status=..., headers=...)`` (True: try again) and ``call.finish()``.

Operators: the library's log lines (a failing discovery and its recovery, list changes,
ejections...) go to the ``logging`` logger ``easdirect`` (``Client(target, logger=...)`` for
your own, ``logger=False`` for none); ``client.metrics_text()`` is the Prometheus text of the
client's figures, and :mod:`easdirect.prometheus` a ``prometheus_client`` collector of them.

HTTP helpers that drive one call per request: :mod:`easdirect.requests` (a ``requests``
transport adapter) and :mod:`easdirect.httpx` (sync and async ``httpx`` transports).
"""

from ._errors import (
    BufferTooSmallError,
    ClosedError,
    DiscoveryFailedError,
    Error,
    InvalidArgumentError,
    NoInstanceError,
    NullParameterError,
    PanicError,
    Status,
    TimeoutError,
    UnknownInstanceError,
)
from ._client import (
    ABI_MAJOR,
    ABI_MINOR,
    DEFAULT_WEIGHT,
    Client,
    Endpoint,
    Instance,
    InstanceStats,
    Stats,
    Subscription,
    abi_version,
    library_version,
    status_str,
)
from ._call import Body, Call, Headers, Outcome


def _package_version() -> str:
    # The installed distribution's version (Cargo.toml's, set at build time by setup.py); from a
    # source tree with no installed metadata, the version of the library loaded.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("easdirect")
    except PackageNotFoundError:
        return library_version()


__version__ = _package_version()
del _package_version

__all__ = [
    "ABI_MAJOR",
    "ABI_MINOR",
    "Body",
    "BufferTooSmallError",
    "Call",
    "DEFAULT_WEIGHT",
    "Client",
    "ClosedError",
    "DiscoveryFailedError",
    "Endpoint",
    "Error",
    "Headers",
    "Instance",
    "InstanceStats",
    "InvalidArgumentError",
    "NoInstanceError",
    "NullParameterError",
    "Outcome",
    "PanicError",
    "Stats",
    "Status",
    "Subscription",
    "TimeoutError",
    "UnknownInstanceError",
    "abi_version",
    "library_version",
    "status_str",
]
