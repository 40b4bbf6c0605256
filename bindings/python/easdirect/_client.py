"""The client: a thin layer over libeasdirect's C ABI through the cffi extension ``_native``.

Threading: every method may be called from any thread. cffi releases the GIL around every C
call, so a blocking call (``wait_ready``, ``close``, ``Subscription.cancel``, the finalizer)
never holds other Python threads up, and a subscription callback (which needs the GIL) can
always run while such a call waits for it.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Set, Union
from urllib.parse import urlsplit

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
    "Client",
    "Instance",
    "Stats",
    "Subscription",
    "abi_version",
    "library_version",
    "status_str",
]

#: The ABI this binding is written for: it needs the same major and at least this minor.
ABI_MAJOR = 1
ABI_MINOR = 0
#: ``sizeof(eas_instance)`` in the C ABI; the struct never grows.
INSTANCE_SIZE = 128
_LAYOUT = {"id": 0, "ip": 8, "port": 54, "weight": 56, "host": 60, "reserved": 124}

_log = logging.getLogger("easdirect")

_OK = 0
_UNKNOWN_INSTANCE = int(Status.UNKNOWN_INSTANCE)
_BUFFER_TOO_SMALL = int(Status.BUFFER_TOO_SMALL)
_DISCOVERY_FAILED = int(Status.DISCOVERY_FAILED)
_NULL = ffi.NULL
_U32_MAX = 0xFFFFFFFF


def check_abi(version: int, instance_size: int, layout: Optional[Dict[str, int]] = None) -> None:
    """Raises ImportError unless the loaded library suits this binding (run at import)."""
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


if lib.EAS_ABI_MAJOR != ABI_MAJOR:  # the header the extension was compiled against
    raise ImportError(
        f"easdirect: compiled against easdirect.h with ABI major {lib.EAS_ABI_MAJOR}, this "
        f"binding needs {ABI_MAJOR}"
    )
check_abi(
    lib.eas_abi_version(),
    ffi.sizeof("eas_instance"),
    {field: ffi.offsetof("eas_instance", field) for field in _LAYOUT},
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


def _option_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, os.PathLike):
        return str(os.fspath(value))
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


def _redact(target: str) -> str:
    """The target without userinfo or query, as it may be printed."""
    try:
        parts = urlsplit(target)
    except ValueError:
        return "<invalid target>"
    netloc = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{netloc}{parts.path}"


def _service_of(target: str) -> Optional[str]:
    """The service name of a target with one (``eas://``, ``nacos://``...), else None."""
    try:
        parts = urlsplit(target)
    except ValueError:
        return None
    if parts.scheme in ("static", "dns", ""):
        return None
    path = parts.path.strip("/")
    return path.rsplit("/", 1)[-1] or None


# Everything a subscription or the exit hook needs lives at module level.
_tls = threading.local()
_active_subscriptions: Set["Subscription"] = set()
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
    """

    def __init__(self, target: str, **options: Any) -> None:
        self._h = _NULL
        self._hv = 0  # the handle as an int, for _fastpick
        _drain_deferred()
        if not isinstance(target, str):
            raise TypeError(f"target must be a str, got {type(target).__name__}")
        self._target = target
        self._service = _service_of(target)
        # id -> Instance of the ids picked so far (see _fastpick.c); a hit is checked against
        # the pick's weight.
        self._cache: Dict[int, Instance] = {}
        err = ffi.new("eas_error **")
        opts = _NULL
        try:
            if options:
                opts = lib.eas_options_new()
                if opts == _NULL:
                    raise MemoryError("eas_options_new failed")
                for key, value in options.items():
                    if value is None:
                        continue
                    st = lib.eas_options_set(
                        opts, str(key).encode(), _option_value(key, value).encode(), err
                    )
                    if st != _OK:
                        raise _take_error(st, err)
            out = ffi.new("eas_client **")
            st = lib.eas_client_new(target.encode(), opts, out, err)
            if st != _OK:
                raise _take_error(st, err)
        finally:
            if opts != _NULL:
                lib.eas_options_free(opts)
        self._h = out[0]
        self._hv = int(ffi.cast("uintptr_t", self._h))
        _live_clients.add(self)

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
        """The target as given."""
        return self._target

    @property
    def service(self) -> Optional[str]:
        """The service name in the target (``eas://host/NAME``), or None (``static://``)."""
        return self._service

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<easdirect.Client {_redact(self._target)} {state}>"

    # -- readiness and picks ----------------------------------------------------------------

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Waits until an instance list is known, at most ``timeout`` seconds (0 only checks).
        Raises :class:`easdirect.TimeoutError` (with the last fetch error) at the deadline. The
        GIL is released while it waits."""
        if timeout < 0:
            raise ValueError("timeout must be >= 0")
        ms = min(int(round(timeout * 1000)), _U32_MAX)
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
        st = lib.eas_report_failure(self._h, id if type(id) is int else id.id)  # type: ignore
        if st == _OK:
            return True
        if st == _UNKNOWN_INSTANCE:
            return False
        raise error_for(st, "the client is closed" if st == Status.CLOSED else status_str(st))

    def report_success(self, id: Union[int, Instance]) -> bool:
        """Reports a successful call to ``id``: its failure count and ejection doubling start
        over. Returns False when ``id`` is not in the current list, True otherwise."""
        st = lib.eas_report_success(self._h, id if type(id) is int else id.id)  # type: ignore
        if st == _OK:
            return True
        if st == _UNKNOWN_INSTANCE:
            return False
        raise error_for(st, "the client is closed" if st == Status.CLOSED else status_str(st))

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
        status), or None when it succeeded or none has finished yet."""
        err = ffi.new("eas_error **")
        st = lib.eas_client_last_error(self._h, err)
        if st == _OK:
            return None
        e = _take_error(st, err)
        if st == _DISCOVERY_FAILED:
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
    try:
        ffi.from_handle(user_data)._finish()
    except BaseException:
        pass


@atexit.register
def _stop_callbacks_at_exit() -> None:
    """Ends every subscription before the interpreter shuts down, so that no library thread
    calls into a finalizing interpreter; later subscribes are refused."""
    global _exiting
    _exiting = True
    for sub in list(_active_subscriptions):
        try:
            sub.cancel()
        except BaseException:
            pass
    for client in list(_live_clients):
        # A subscription whose cancel could not run (its client unreachable) ends with it.
        if any(s._client() is client for s in _active_subscriptions):
            client.close()
    _drain_deferred()
