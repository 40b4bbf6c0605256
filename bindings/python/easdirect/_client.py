"""The client: a thin layer over libeasdirect's C ABI through the cffi extension ``_native``.

Threading: every method may be called from any thread. cffi releases the GIL around every C
call, so a blocking call (``wait_ready``, ``close``, ``Subscription.cancel``, the finalizer)
never holds other Python threads up, and a callback (a subscription's, or a source's fetch,
which need the GIL) can always run while such a call waits for it.
"""

from __future__ import annotations

import atexit
import logging
import operator
import os
import threading
import weakref
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple, Union

from ._errors import ClosedError, Error, InvalidArgumentError, Status, error_for

try:
    from . import _fastpick
    from ._native import ffi, lib
except ImportError as _e:  # pragma: no cover - a source checkout imported without building
    raise ImportError(
        "easdirect: the compiled extension easdirect._native is missing or cannot load "
        f"libeasdirect.so ({_e}); install the package (pip install ./bindings/python) instead "
        "of importing it from the source tree"
    ) from _e

__all__ = [
    "ABI_MAJOR",
    "ABI_MINOR",
    "DEFAULT_WEIGHT",
    "Client",
    "Endpoint",
    "Instance",
    "InstanceStats",
    "Stats",
    "Subscription",
    "abi_version",
    "library_version",
    "status_str",
]

#: The ABI this binding is written for: it needs the same major and at least this minor
#: (1.1: ``eas_client_new_with_source``, behind :meth:`Client.from_source`; 1.2: the
#: ``eas_call_*`` functions behind :meth:`Client.call`, ``eas_client_instance_stats``,
#: ``eas_client_service`` and ``eas_client_target``; 1.3: ``eas_client_transport``, behind
#: :meth:`Client.transport`; 1.4: ``eas_options_set_log``, behind the ``logger`` argument, and
#: ``eas_client_metrics_text``, behind :meth:`Client.metrics_text`).
ABI_MAJOR = 1
ABI_MINOR = 4
#: ``sizeof(eas_instance)`` in the C ABI; the struct never grows.
INSTANCE_SIZE = 128
_LAYOUT = {"id": 0, "ip": 8, "port": 54, "weight": 56, "host": 60, "reserved": 124}
#: ``sizeof(eas_instance_stats)`` in the C ABI; the struct never grows.
INSTANCE_STATS_SIZE = 64
_STATS_LAYOUT = {
    "id": 0,
    "in_flight": 8,
    "reported_waiting": 12,
    "attempts": 16,
    "failures": 24,
    "latency_ewma_us": 32,
    "reported_kv_permille": 36,
    "ejected_until_unix_ms": 40,
    "report_unix_ms": 48,
    "weight": 56,
    "reported_running": 60,
}

_log = logging.getLogger("easdirect")

_OK = 0
_UNKNOWN_INSTANCE = int(Status.UNKNOWN_INSTANCE)
_BUFFER_TOO_SMALL = int(Status.BUFFER_TOO_SMALL)
_DISCOVERY_FAILED = int(Status.DISCOVERY_FAILED)
_PANIC = int(Status.PANIC)
_NULL = ffi.NULL
_U32_MAX = 0xFFFFFFFF


def check_abi(
    version: int,
    instance_size: int,
    layout: Optional[Dict[str, int]] = None,
    stats_size: int = INSTANCE_STATS_SIZE,
    stats_layout: Optional[Dict[str, int]] = None,
) -> None:
    """Raises ImportError unless the loaded library suits this binding (run at import):
    the ABI version, and the size and field offsets of ``eas_instance`` and
    ``eas_instance_stats`` the extension was compiled with."""
    major, minor = version >> 16, version & 0xFFFF
    if major != ABI_MAJOR or minor < ABI_MINOR:
        raise ImportError(
            f"easdirect: the loaded libeasdirect has ABI version {major}.{minor}, but this "
            f"binding needs {ABI_MAJOR}.x with x >= {ABI_MINOR}; reinstall the easdirect "
            f"package against a matching libeasdirect"
        )
    if instance_size != INSTANCE_SIZE:
        raise ImportError(
            f"easdirect: sizeof(eas_instance) is {instance_size}, expected {INSTANCE_SIZE}; "
            f"the package was built against an incompatible easdirect.h"
        )
    if layout is not None and layout != _LAYOUT:
        raise ImportError(
            f"easdirect: the eas_instance layout is {layout}, expected {_LAYOUT}; the package "
            f"was built against an incompatible easdirect.h"
        )
    if stats_size != INSTANCE_STATS_SIZE:
        raise ImportError(
            f"easdirect: sizeof(eas_instance_stats) is {stats_size}, expected "
            f"{INSTANCE_STATS_SIZE}; the package was built against an incompatible easdirect.h"
        )
    if stats_layout is not None and stats_layout != _STATS_LAYOUT:
        raise ImportError(
            f"easdirect: the eas_instance_stats layout is {stats_layout}, expected "
            f"{_STATS_LAYOUT}; the package was built against an incompatible easdirect.h"
        )


if lib.EAS_ABI_MAJOR != ABI_MAJOR:  # the header the extension was compiled against
    raise ImportError(
        f"easdirect: compiled against easdirect.h with ABI major {lib.EAS_ABI_MAJOR}, this "
        f"binding needs {ABI_MAJOR}"
    )
check_abi(
    lib.eas_abi_version(),
    ffi.sizeof("eas_instance"),
    {field: ffi.offsetof("eas_instance", field) for field in _LAYOUT},
    ffi.sizeof("eas_instance_stats"),
    {field: ffi.offsetof("eas_instance_stats", field) for field in _STATS_LAYOUT},
)


def library_version() -> str:
    """The loaded library's version, e.g. ``"0.1.0"``."""
    return str(ffi.string(lib.eas_version()).decode())


def abi_version() -> "tuple[int, int]":
    """The loaded library's ABI version as ``(major, minor)``."""
    v = lib.eas_abi_version()
    return v >> 16, v & 0xFFFF


def status_str(code: int) -> str:
    """The library's description of a status code (``"unknown status"`` for any other int)."""
    return str(ffi.string(lib.eas_status_str(int(code))).decode())


class Instance(NamedTuple):
    """A discovered instance (the C ``eas_instance``). Immutable; ``id`` is stable for the same
    ``host`` in every process (FNV-1a-64 of ``host``)."""

    id: int
    #: Textual IPv4 or IPv6 address.
    ip: str
    port: int
    #: The source's weight; 0 means known but never picked.
    weight: int
    #: ``"ip:port"`` or ``"[ipv6]:port"``, ready for ``f"http://{host}/api/predict/..."``.
    host: str

    @property
    def url(self) -> str:
        """``"http://" + host``."""
        return "http://" + self.host


#: The weight EAS gives an instance by default: an :class:`Endpoint` without one gets it.
DEFAULT_WEIGHT = 100


class Endpoint(NamedTuple):
    """An instance as a source function lists it (see :meth:`Client.from_source`); a plain
    ``(ip, port)`` or ``(ip, port, weight)`` tuple is the same."""

    #: Textual IPv4 or IPv6 address (``"10.0.0.1"``, ``"fd00::1"``, ``"[fd00::1]"``), or an
    #: ``ipaddress`` address.
    ip: str
    #: 1 to 65535.
    port: int
    #: The instance's share of the picks, 0 to 2**32-1; 0 means known but never picked.
    weight: int = DEFAULT_WEIGHT


class Stats(NamedTuple):
    """A client's counters (the C ``eas_stats``)."""

    #: Instance lists published so far (changes only).
    generation: int
    #: Successful discovery fetches.
    refresh_ok: int
    #: Fetches that kept the cache (error, bad body, nothing pickable).
    refresh_failed: int
    #: Time of the last successful fetch in ms since the epoch; 0 if none.
    last_ok_unix_ms: int
    #: Instances in the current list.
    instances: int
    #: Instances ejected now.
    ejected: int


class InstanceStats(NamedTuple):
    """The figures of one instance of the current list (the C ``eas_instance_stats``), from
    this client's calls and the instance's load reports (see :meth:`Client.instance_stats`)."""

    #: The instance's id (as :attr:`Instance.id`).
    id: int
    #: Attempts of this client's calls now in flight to it.
    in_flight: int
    #: Its queue (``num_requests_waiting``), from its last load report.
    reported_waiting: int
    #: Call attempts sent to it since it joined the list.
    attempts: int
    #: Every failure the ejection state saw: failed attempts and ``report_failure`` calls.
    failures: int
    #: The peak EWMA of the time to response headers, in microseconds (what ``peak_ewma``
    #: uses); 0 before the first sample.
    latency_ewma_us: int
    #: KV-cache use, 0-1000, from its last load report.
    reported_kv_permille: int
    #: Until when (ms since the epoch) it is out of picks, ejected or backing off; 0 if not.
    ejected_until_unix_ms: int
    #: Time of its last load report (ms since the epoch); 0 if none.
    report_unix_ms: int
    #: Its weight.
    weight: int
    #: Requests running (``num_requests_running``), from its last load report.
    reported_running: int


def _decode_stats(c: Any) -> InstanceStats:
    return InstanceStats(
        int(c.id),
        int(c.in_flight),
        int(c.reported_waiting),
        int(c.attempts),
        int(c.failures),
        int(c.latency_ewma_us),
        int(c.reported_kv_permille),
        int(c.ejected_until_unix_ms),
        int(c.report_unix_ms),
        int(c.weight),
        int(c.reported_running),
    )


def _decode(c: Any) -> Instance:
    return Instance(
        int(c.id),
        ffi.string(c.ip).decode("ascii", "replace"),
        int(c.port),
        int(c.weight),
        ffi.string(c.host).decode("ascii", "replace"),
    )


def _take_error(status: int, errp: Any) -> Error:
    """The Error for ``status``, with the message of ``*errp`` (freed here) when set."""
    e = errp[0] if errp is not None else _NULL
    if e != _NULL:
        try:
            message = ffi.string(lib.eas_error_message(e)).decode("utf-8", "replace")
        finally:
            lib.eas_error_free(e)
        errp[0] = _NULL
    else:
        message = status_str(status)
    return error_for(status, message)


def _c_string(what: str, s: str) -> bytes:
    """``s`` as the NUL-terminated UTF-8 the C ABI takes. A NUL inside would silently cut the
    string short there (cffi passes the bytes as they are), and a lone surrogate (from a str
    decoded with ``surrogateescape``) has no UTF-8 form: both are InvalidArgumentError, naming
    ``what``."""
    if not isinstance(s, str):
        raise TypeError(f"{what} must be a str, got {type(s).__name__}")
    nul = s.find("\0")
    if nul >= 0:
        raise InvalidArgumentError(
            Status.INVALID_ARGUMENT, f"{what} contains a NUL character (at index {nul})"
        )
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidArgumentError(
            Status.INVALID_ARGUMENT,
            f"{what} is not valid Unicode: a lone surrogate {s[e.start]!r} at index {e.start} "
            "has no UTF-8 form",
        ) from None


def _option_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, os.PathLike):
        # A path whose fspath is bytes is decoded (undecodable bytes become lone surrogates,
        # which _c_string refuses) rather than turned into "b'...'".
        return os.fsdecode(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    raise InvalidArgumentError(
        Status.INVALID_ARGUMENT,
        f"option {key!r}: expected a str, int or bool, got {type(value).__name__}",
    )


def _ids(items: Iterable[Any]) -> List[int]:
    """Flattens ids, Instances and iterables of them into a list of ints."""
    out: List[int] = []
    for x in items:
        if isinstance(x, Instance):
            out.append(x.id)
        elif isinstance(x, int):
            out.append(x)
        elif isinstance(x, (str, bytes)) or not hasattr(x, "__iter__"):
            raise TypeError(
                "expected instance ids (int), Instances or iterables of them, got "
                f"{type(x).__name__}"
            )
        else:
            out.extend(_ids(x))
    return out


def _instance_id(x: Any) -> int:
    """The id of an Instance or an int subclass; TypeError for anything else (None, a str)."""
    if isinstance(x, Instance):
        return x.id
    if isinstance(x, int):
        return int(x)
    raise TypeError(f"expected an instance id (int) or an Instance, got {type(x).__name__}")


# Everything a subscription or the exit hook needs lives at module level.
_tls = threading.local()
_active_subscriptions: Set["Subscription"] = set()
_active_sources: Set["_Source"] = set()
_live_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()
_deferred_free: List[Any] = []
_deferred_lock = threading.Lock()
_exiting = False

_pick = _fastpick.pick
_pick_excluding = _fastpick.pick_excluding


def _raise_pick_error(status: int, excluding: int) -> None:
    """Raises the error of a failed pick (called by ``_fastpick``)."""
    if status == Status.NO_INSTANCE:
        why = (
            "every instance is excluded or none is known"
            if excluding
            else "no instance list is known yet (see wait_ready and last_error)"
        )
        raise error_for(status, f"no instance to select: {why}")
    if status == Status.CLOSED:
        raise error_for(status, "the client is closed")
    raise error_for(status, status_str(status))


_fastpick.init(Instance, _raise_pick_error)


def _drain_deferred() -> None:
    """Frees clients whose finalizer ran inside a subscription callback."""
    if getattr(_tls, "in_callback", False):
        return
    while True:
        with _deferred_lock:
            if not _deferred_free:
                return
            h = _deferred_free.pop()
        lib.eas_client_free(h)


class Client:
    """A client of one target: discovery in the background, a pick per request, ejection of
    instances reported as failing. Thread-safe: share one per service per process.

    ``Client("eas://1.2.3.4:8080/my_service", refresh_interval_ms=1000)``; options are the
    library's keys (see the README), given as str, int or bool. Use it as a context manager, or
    call :meth:`close`; the finalizer releases the native client.

    ``logger``: where the library's log lines go (a failing discovery and its recovery, list
    changes, ejections, back-offs, snapshot-file trouble, a push stream up or lost; never one
    per request, never a secret). None (the default): the ``logging`` logger ``easdirect``; a
    ``logging.Logger`` or ``LoggerAdapter`` of yours; False: none. Levels: the library's
    error, warn, info and debug are ERROR, WARNING, INFO and DEBUG. The most verbose level the
    library sends is the one the logger is enabled for when the client is made (so set the
    level first; a logger at WARNING, the default of an unconfigured one, gets the warnings).
    """

    def __init__(self, target: str, *, logger: LoggerOption = None, **options: Any) -> None:
        self._h = _NULL
        self._hv = 0  # the handle as an int, for _fastpick
        self._source: Optional[_Source] = None
        self._log_sink: Optional[LogSink] = None
        _drain_deferred()
        ctarget = _c_string("target", target)
        self._target = ""  # the library's printable target, set by _open
        self._service: Optional[str] = None
        # id -> Instance of the ids picked so far (see _fastpick.c); a hit is checked against
        # the pick's weight.
        self._cache: Dict[int, Instance] = {}
        self._open(
            lambda opts, out, err: lib.eas_client_new(ctarget, opts, out, err), options, logger
        )

    def _open(
        self,
        create: Callable[[Any, Any, Any], int],
        options: Dict[str, Any],
        logger: LoggerOption,
    ) -> None:
        """Creates the native client with ``create(opts, out, err)`` from ``options``, logging
        to ``logger`` (see the class)."""
        log_to = _log_sink.resolve(logger)
        level = _log_sink.max_level(log_to) if log_to is not None and not _exiting else 0
        err = ffi.new("eas_error **")
        opts = _NULL
        try:
            if options or level:
                opts = lib.eas_options_new()
                if opts == _NULL:
                    raise MemoryError("eas_options_new failed")
                for key, value in options.items():
                    if value is None:
                        continue
                    ckey = _c_string(f"option key {key!r}", str(key))
                    cvalue = _c_string(f"the value of option {key!r}", _option_value(key, value))
                    st = lib.eas_options_set(opts, ckey, cvalue, err)
                    if st != _OK:
                        raise _take_error(st, err)
            if level:
                assert log_to is not None
                sink = LogSink(log_to)
                st = lib.eas_options_set_log(
                    opts, _log_sink.LINE_FN, sink.handle, _log_sink.FREE_FN, level
                )
                if st != _OK:
                    sink._finish()  # a refused set_log takes no ownership of user_data
                    raise error_for(st, status_str(st))
                # From here the options own the sink: freeing them (and every client made
                # with them) runs free_user_data, which releases it.
                self._log_sink = sink
            out = ffi.new("eas_client **")
            st = create(opts, out, err)
            if st != _OK:
                raise _take_error(st, err)
        finally:
            if opts != _NULL:
                lib.eas_options_free(opts)
        self._h = out[0]
        self._hv = int(ffi.cast("uintptr_t", self._h))
        # Both texts are fixed for the client's life: read once.
        if not self._target:
            self._target = ffi.string(lib.eas_client_target(self._h)).decode("utf-8", "replace")
        service = ffi.string(lib.eas_client_service(self._h)).decode("utf-8", "replace")
        self._service = service or None
        _live_clients.add(self)

    @classmethod
    def from_source(
        cls,
        fetch: Callable[[], Optional[Iterable[Any]]],
        *,
        logger: LoggerOption = None,
        **options: Any,
    ) -> "Client":
        """A client whose instances come from ``fetch()`` instead of a target: your own
        registry (Consul, a file a sidecar writes, a company service...).

        ``fetch`` takes no argument and returns an iterable (a list, a generator) of
        ``(ip, port)`` or ``(ip, port, weight)`` tuples, :class:`Endpoint` or
        :class:`Instance` objects; the weight defaults to :data:`DEFAULT_WEIGHT` (100), and 0
        lists an instance that is never picked. It is called on a library background thread
        at each refresh (``refresh_interval_ms``, 5 s by default, jittered), never twice at
        once, never after :meth:`close` returned. Everything else (the cache, picks, ejection,
        subscriptions, ``wait_ready``, the HTTP helpers with ``aliases``) works as for any
        target.

        A failed fetch keeps the last list: an exception (logged to logger ``easdirect``, and
        carried by :meth:`last_error`), a returned None (logged), an empty list, or one with no
        positive weight. Malformed items (not a 2- or 3-tuple, an ip that is not a textual
        address, a port out of 1-65535, a weight out of range) are skipped, with a warning
        (repeated only when what is skipped changes).

        ``fetch`` and what it holds stay alive until the client is closed (:meth:`close`, or
        the finalizer of an unreachable client), and are released then, once: a ``fetch`` that
        refers to the client keeps it alive until :meth:`close`. ``fetch`` may call the client
        (``close()`` included: the source ends when that fetch returns), but not
        ``wait_ready`` before the first list. It holds a thread the library shares with every
        client while it runs, and ``close()`` waits for it: bound its network calls with a
        timeout.

        Options: the keys every target shares (``refresh_interval_ms``, ``ejection_base_ms``...);
        ``logger`` as for the constructor.
        """
        if not callable(fetch):
            raise TypeError(f"fetch must be callable, got {type(fetch).__name__}")
        if _exiting:
            raise ClosedError(Status.CLOSED, "the interpreter is exiting")
        self = cls.__new__(cls)
        self._h = _NULL
        self._hv = 0
        self._source = None
        self._log_sink = None
        _drain_deferred()
        name = getattr(fetch, "__qualname__", None) or type(fetch).__qualname__
        self._target = f"<source {name}>"
        self._service = None
        self._cache = {}
        source = _Source(fetch)
        _active_sources.add(source)
        try:
            self._open(
                lambda opts, out, err: lib.eas_client_new_with_source(
                    lib.easpy_fetch, source._handle, lib.easpy_on_free, opts, out, err
                ),
                options,
                logger,
            )
        except BaseException:
            # A failed create takes no ownership of user_data: free_user_data never runs.
            source._finish()
            raise
        source._client = weakref.ref(self)
        self._source = source
        return self

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Stops refreshes and callbacks (every subscription ends); later calls raise
        :class:`ClosedError`. Idempotent and thread-safe."""
        h = self._h
        if h != _NULL:
            lib.eas_client_close(h)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        if self._h == _NULL:
            return True
        return bool(lib.eas_client_stats(self._h, ffi.new("eas_stats *")) == Status.CLOSED)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        h = getattr(self, "_h", _NULL)
        if h == _NULL:
            return
        self._h = _NULL
        self._hv = 0
        try:
            if getattr(_tls, "in_callback", False):
                # eas_client_free waits for running callbacks: not from inside one.
                lib.eas_client_close(h)
                with _deferred_lock:
                    _deferred_free.append(h)
            else:
                lib.eas_client_free(h)
        except Exception:  # pragma: no cover - interpreter teardown
            pass

    @property
    def target(self) -> str:
        """The target as it may be printed (``eas_client_target``): secrets removed, no
        userinfo and no query (``eas://1.2.3.4:8080/my_service``); ``"<source NAME>"`` for a
        client from :meth:`from_source`. Still answers after :meth:`close`."""
        return self._target

    @property
    def service(self) -> Optional[str]:
        """The service the target names (``eas_client_service``): the service of an ``eas://``
        or ``nacos://`` target, the name of a ``dns://`` one; None for ``static://`` and
        :meth:`from_source` clients. The HTTP helpers route requests whose host is this name.
        Still answers after :meth:`close`."""
        return self._service

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<easdirect.Client {self._target} {state}>"

    # -- readiness and picks ----------------------------------------------------------------

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Waits until an instance list is known, at most ``timeout`` seconds (0 only checks).
        Raises :class:`easdirect.TimeoutError` (with the last fetch error) at the deadline. The
        GIL is released while it waits."""
        if timeout < 0:
            raise ValueError("timeout must be >= 0")
        # float('inf') waits as long as the C ABI allows (about 49 days), not OverflowError.
        ms = _U32_MAX if timeout * 1000 >= _U32_MAX else int(round(timeout * 1000))
        err = ffi.new("eas_error **")
        st = lib.eas_client_wait_ready(self._h, ms, err)
        if st != _OK:
            raise _take_error(st, err)

    def select(self) -> Instance:
        """Picks an instance by smooth weighted round-robin, skipping ejected ones. Takes no
        lock and keeps the GIL (it never blocks). Raises :class:`NoInstanceError` before the
        first list is known."""
        return _pick(self._hv, self._cache)

    def select_excluding(self, *ids: Union[int, Instance, Iterable[Any]]) -> Instance:
        """As :meth:`select`, but never one of ``ids`` (ints, Instances, or iterables of them),
        for a retry on a different instance. Raises :class:`NoInstanceError` when every
        instance is excluded."""
        return _pick_excluding(self._hv, self._cache, _ids(ids))

    def report_failure(self, id: Union[int, Instance]) -> bool:
        """Reports a failed call to instance ``id``: after ``failures_before_ejection``
        consecutive failures it is ejected. Returns False when ``id`` is not in the current list
        (harmless), True otherwise."""
        st = lib.eas_report_failure(self._h, id if type(id) is int else _instance_id(id))
        if st == _OK:
            return True
        if st == _UNKNOWN_INSTANCE:
            return False
        raise error_for(st, "the client is closed" if st == Status.CLOSED else status_str(st))

    def report_success(self, id: Union[int, Instance]) -> bool:
        """Reports a successful call to ``id``: its failure count and ejection doubling start
        over. Returns False when ``id`` is not in the current list, True otherwise."""
        st = lib.eas_report_success(self._h, id if type(id) is int else _instance_id(id))
        if st == _OK:
            return True
        if st == _UNKNOWN_INSTANCE:
            return False
        raise error_for(st, "the client is closed" if st == Status.CLOSED else status_str(st))

    # -- calls ----------------------------------------------------------------------------------

    def call(
        self, key: Union[bytes, bytearray, memoryview, str, None] = None, *, idempotent: bool = True
    ) -> "Call":
        """Begins a call: one logical request and its attempts, with picks that see load (by
        ``lb_policy``: ``least_request`` by default), retries decided by the library, and
        per-instance figures (:meth:`instance_stats`). Use it as a context manager::

            with client.call(key=session_id) as call:
                inst = call.next()
                ...                                  # send the request to inst.host
                retry = call.record(status=resp.status_code, headers=resp.headers)

        ``key``: an affinity key (bytes-like, or a str taken as UTF-8; a session id, a
        conversation id, a prompt-prefix hash): a keyed call goes to the same instance for the
        same key (consistent hashing with bounded loads), whatever ``lb_policy`` says; None or
        empty for none. ``idempotent=False``: retry only when nothing was sent (CONNECT_FAILED).

        Raises :class:`ClosedError` after :meth:`close`. The call holds this client alive until
        it is closed (or collected)."""
        return Call(self, key, bool(idempotent))

    # -- observation --------------------------------------------------------------------------

    def instances(self) -> List[Instance]:
        """Every known instance, ejected or not, weight 0 included; [] before the first list."""
        n = ffi.new("size_t *")
        buf = _NULL
        cap = 0
        while True:
            st = lib.eas_client_instances(self._h, buf, cap, n)
            if st == _OK:
                return [_decode(buf[k]) for k in range(int(n[0]))] if cap else []
            if st != _BUFFER_TOO_SMALL:
                raise error_for(
                    st, "the client is closed" if st == Status.CLOSED else status_str(st)
                )
            cap = int(n[0]) + 8  # the list can grow between calls
            buf = ffi.new("eas_instance[]", cap)

    def instance_stats(self) -> List[InstanceStats]:
        """The figures of each instance of the current list, in the order of
        :meth:`instances`: in-flight attempts, attempts, failures, latency EWMA, the last load
        report, ejection; [] before the first list. Takes the client's lock briefly: not for
        the request path."""
        n = ffi.new("size_t *")
        buf = _NULL
        cap = 0
        while True:
            st = lib.eas_client_instance_stats(self._h, buf, cap, n)
            if st == _OK:
                return [_decode_stats(buf[k]) for k in range(int(n[0]))] if cap else []
            if st != _BUFFER_TOO_SMALL:
                raise error_for(
                    st, "the client is closed" if st == Status.CLOSED else status_str(st)
                )
            cap = int(n[0]) + 8  # the list can grow between calls
            buf = ffi.new("eas_instance_stats[]", cap)

    def transport(self) -> str:
        """What delivers the list now: ``"push"`` while a Nacos push stream (gRPC) is up,
        ``"poll"`` otherwise (every other source, and Nacos while its stream is down; the
        ``nacos_transport`` option decides whether a Nacos client subscribes)."""
        out = ffi.new("int32_t *")
        st = lib.eas_client_transport(self._h, out)
        if st != _OK:
            raise error_for(st, "the client is closed" if st == Status.CLOSED else status_str(st))
        return "push" if out[0] == lib.EAS_TRANSPORT_PUSH else "poll"

    def metrics_text(self) -> str:
        """The client's stats and every instance's stats in the Prometheus text format 0.0.4
        (names in the README: ``easdirect_list_generation``, ``easdirect_instance_attempts_total``
        ...), every sample labelled ``target`` (secrets removed) and the per-instance ones
        ``instance`` (``host:port``). Serve it as it is, or see :mod:`easdirect.prometheus` for
        a ``prometheus_client`` collector. Raises :class:`ClosedError` after :meth:`close`."""
        n = ffi.new("size_t *")
        buf = _NULL
        cap = 0
        while True:
            st = lib.eas_client_metrics_text(self._h, buf, cap, n)
            if st == _OK:
                return ffi.unpack(buf, int(n[0])).decode("utf-8", "replace")
            if st != _BUFFER_TOO_SMALL:
                raise error_for(
                    st, "the client is closed" if st == Status.CLOSED else status_str(st)
                )
            cap = int(n[0]) + 1 + 1024  # the NUL, and room for a list that grows meanwhile
            buf = ffi.new("char[]", cap)

    def stats(self) -> Stats:
        """The client's counters."""
        out = ffi.new("eas_stats *")
        st = lib.eas_client_stats(self._h, out)
        if st != _OK:
            raise error_for(st, "the client is closed" if st == Status.CLOSED else status_str(st))
        return Stats(
            int(out.generation),
            int(out.refresh_ok),
            int(out.refresh_failed),
            int(out.last_ok_unix_ms),
            int(out.instances),
            int(out.ejected),
        )

    def last_error(self) -> Optional[Error]:
        """The last discovery fetch's error (a :class:`DiscoveryFailedError` naming the URL and
        status), or None when it succeeded or none has finished yet. For a client from
        :meth:`from_source` whose ``fetch`` raised, the message names the exception, which is
        also the error's ``__cause__``."""
        err = ffi.new("eas_error **")
        st = lib.eas_client_last_error(self._h, err)
        if st == _OK:
            return None
        e = _take_error(st, err)
        if st == _DISCOVERY_FAILED:
            source = self._source
            cause = source.last_exception if source is not None else None
            if cause is not None:
                e = error_for(st, f"{e.message}: {type(cause).__name__}: {cause}")
                e.__cause__ = cause
            return e
        raise e

    def subscribe(self, callback: Callable[[List[Instance]], Any]) -> "Subscription":
        """Calls ``callback(instances)`` on a library background thread with the whole new list
        each time it changes, and once soon after subscribing when a list is already known.
        Callbacks of one client never overlap. An exception in the callback is logged (logger
        ``easdirect``) and does not end the subscription. Returns a :class:`Subscription`;
        ``cancel()`` it (or close the client) to stop."""
        if not callable(callback):
            raise TypeError("callback must be callable")
        if _exiting:
            raise ClosedError(Status.CLOSED, "the interpreter is exiting")
        sub = Subscription(self, callback)
        out = ffi.new("uint64_t *")
        _active_subscriptions.add(sub)
        st = lib.eas_client_subscribe(
            self._h, lib.easpy_on_change, sub._handle, lib.easpy_on_free, out
        )
        if st != _OK:
            # A refused subscribe takes no ownership of user_data.
            _active_subscriptions.discard(sub)
            sub._handle = None
            raise error_for(st, "the client is closed" if st == Status.CLOSED else status_str(st))
        sub._id = int(out[0])
        return sub


class Subscription:
    """A subscription to a client's changes (see :meth:`Client.subscribe`)."""

    def __init__(self, client: Client, callback: Callable[[List[Instance]], Any]) -> None:
        self._client = weakref.ref(client)
        self._callback = callback
        self._id: Optional[int] = None
        # user_data of the C subscription: keeps this object alive until free_user_data runs.
        self._handle: Any = ffi.new_handle(self)
        self._ended = threading.Event()

    @property
    def active(self) -> bool:
        """False once the subscription ended (cancelled, or its client closed)."""
        return not self._ended.is_set()

    def cancel(self) -> None:
        """Ends the subscription: no callback runs after it returns (when called from inside
        the callback, once that callback returns). Idempotent."""
        if self._ended.is_set() or self._id is None:
            return
        client = self._client()
        if client is None or client._h == _NULL:
            return  # freeing the client ended it
        st = lib.eas_client_unsubscribe(client._h, self._id)
        if st not in (_OK, Status.INVALID_ARGUMENT, Status.CLOSED):
            raise error_for(st, status_str(st))

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def _deliver(self, instances: Any, n: int) -> None:
        if _exiting or self._ended.is_set():
            return
        items = [_decode(instances[k]) for k in range(n)]
        outer = getattr(_tls, "in_callback", False)
        _tls.in_callback = True
        try:
            self._callback(items)
        except BaseException:
            _log.exception("easdirect: subscription callback %r raised", self._callback)
        finally:
            _tls.in_callback = outer

    def _finish(self) -> None:
        self._ended.set()
        _active_subscriptions.discard(self)
        self._handle = None


class _Source:
    """The user data of a client from :meth:`Client.from_source`: the fetch callable, kept
    alive (in ``_active_sources``) until the library's free_user_data runs, which releases it.
    Refers to its client weakly only, so that an unreachable client is finalized."""

    def __init__(self, fetch: Callable[[], Optional[Iterable[Any]]]) -> None:
        self._fetch: Optional[Callable[[], Optional[Iterable[Any]]]] = fetch
        self._client: Optional["weakref.ref[Client]"] = None
        #: The exception of the last fetch when it raised, else None (see Client.last_error).
        self.last_exception: Optional[BaseException] = None
        self._skipped = ""  # the last warning about skipped items
        # user_data of the C source: keeps this object alive until free_user_data runs.
        self._handle: Any = ffi.new_handle(self)

    @property
    def active(self) -> bool:
        return self._handle is not None

    def _run(self, builder: Any) -> int:
        fetch = self._fetch
        if fetch is None or _exiting:
            return _DISCOVERY_FAILED
        outer = getattr(_tls, "in_callback", False)
        _tls.in_callback = True
        try:
            try:
                result = fetch()
                if result is None:
                    raise TypeError(
                        "the source function returned None, expected an iterable of "
                        "(ip, port[, weight])"
                    )
                items = list(result)  # a generator runs here: its exceptions are the fetch's
            except BaseException as e:
                self.last_exception = e
                _log.error(
                    "easdirect: source function %r raised; keeping the last instance list",
                    fetch,
                    exc_info=True,
                )
                return _DISCOVERY_FAILED
            self.last_exception = None
            self._add(builder, items)
            return _OK
        finally:
            _tls.in_callback = outer

    def _add(self, builder: Any, items: List[Any]) -> None:
        ips: List[bytes] = []
        ports: List[int] = []
        weights: List[int] = []
        index: List[int] = []
        bad: List[Tuple[int, Any, str]] = []
        for k, item in enumerate(items):
            try:
                ip, port, weight = _endpoint(item)
            except (TypeError, ValueError) as why:
                bad.append((k, item, str(why)))
                continue
            ips.append(ip)
            ports.append(port)
            weights.append(weight)
            index.append(k)
        n = len(ips)
        if n:
            refused = ffi.new("uint8_t[]", n)
            lib.easpy_add_all(
                builder,
                b"\0".join(ips) + b"\0",
                ffi.new("uint16_t[]", ports),
                ffi.new("uint32_t[]", weights),
                n,
                refused,
            )
            for j in range(n):
                if refused[j]:
                    bad.append((index[j], items[index[j]], "not a textual IPv4 or IPv6 address"))
        if not bad:
            self._skipped = ""
            return
        bad.sort(key=lambda b: b[0])
        k, item, why = bad[0]
        message = (
            f"easdirect: source function {self._fetch!r}: skipped {len(bad)} malformed item(s) "
            f"of {len(items)}; the first, #{k} {item!r}: {why}"
        )
        # Warned once while the same items are skipped at each refresh.
        _log.log(logging.DEBUG if message == self._skipped else logging.WARNING, "%s", message)
        self._skipped = message

    def _finish(self) -> None:
        _active_sources.discard(self)
        self._handle = None
        self._fetch = None  # what the user gave is released here, once
        self.last_exception = None


def _endpoint(item: Any) -> Tuple[bytes, int, int]:
    """(ip, port, weight) of one item a source listed; TypeError/ValueError when malformed."""
    if isinstance(item, Instance):
        ip, port, weight = item.ip, item.port, item.weight
    elif isinstance(item, (tuple, list)):
        if len(item) == 2:
            (ip, port), weight = item, DEFAULT_WEIGHT
        elif len(item) == 3:
            ip, port, weight = item
        else:
            raise TypeError(f"expected (ip, port) or (ip, port, weight), got {len(item)} fields")
    else:
        raise TypeError(
            f"expected an (ip, port[, weight]) tuple or an Endpoint, got {type(item).__name__}"
        )
    if not isinstance(ip, str):
        if type(ip).__module__ != "ipaddress":
            raise TypeError(f"ip must be a str, got {type(ip).__name__}")
        ip = str(ip)
    if "\0" in ip:
        raise ValueError("ip contains a NUL character")
    if isinstance(port, bool) or isinstance(weight, bool):
        raise TypeError("port and weight must be ints, not bools")
    port = operator.index(port)
    weight = operator.index(weight)
    if not 0 < port <= 0xFFFF:
        raise ValueError(f"port {port} is not in 1-65535")
    if not 0 <= weight <= _U32_MAX:
        raise ValueError(f"weight {weight} is not in 0-{_U32_MAX}")
    return ip.encode("utf-8", "surrogateescape"), port, weight


@ffi.def_extern(error=_PANIC)
def easpy_fetch(user_data: Any, builder: Any) -> int:
    try:
        return int(ffi.from_handle(user_data)._run(builder))
    except BaseException:  # never let anything escape into the library's thread
        try:
            _log.exception("easdirect: source dispatch failed")
        except BaseException:
            pass
        return _PANIC


@ffi.def_extern()
def easpy_on_change(user_data: Any, instances: Any, n: int) -> None:
    try:
        ffi.from_handle(user_data)._deliver(instances, n)
    except BaseException:  # never let anything escape into the library's thread
        try:
            _log.exception("easdirect: subscription dispatch failed")
        except BaseException:
            pass


@ffi.def_extern()
def easpy_on_free(user_data: Any) -> None:
    # Ends a Subscription or a _Source: both release what they hold in _finish.
    try:
        ffi.from_handle(user_data)._finish()
    except BaseException:
        pass


@atexit.register
def _stop_callbacks_at_exit() -> None:
    """Ends every subscription and source before the interpreter shuts down, so that no library
    thread calls into a finalizing interpreter; later subscribes and sources are refused."""
    global _exiting
    _exiting = True  # from here a fetch returns at once, without calling Python code
    _log_sink.stop()  # no log line and no log free_user_data enters Python from here
    for sub in list(_active_subscriptions):
        try:
            sub.cancel()
        except BaseException:
            pass
    for source in list(_active_sources):
        # Closing the client ends its source (after a fetch in progress returns).
        client = source._client() if source._client is not None else None
        if client is not None:
            try:
                client.close()
            except BaseException:
                pass
    for client in list(_live_clients):
        # A subscription whose cancel could not run (its client unreachable) ends with it.
        if any(s._client() is client for s in _active_subscriptions):
            client.close()
    _drain_deferred()


from ._call import Call  # noqa: E402 - it uses Instance and the pick cache defined above
from . import _log_sink  # noqa: E402 - it uses _tls defined above
from ._log_sink import LoggerOption, LogSink  # noqa: E402
