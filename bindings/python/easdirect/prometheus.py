"""A ``prometheus_client`` collector of easdirect clients' metrics.

    import prometheus_client
    import easdirect, easdirect.prometheus

    client = easdirect.Client("eas://1.2.3.4:8080/my_service")
    prometheus_client.REGISTRY.register(easdirect.prometheus.Collector(client))

Each scrape reads :meth:`easdirect.Client.metrics_text` of every client (the library's own
Prometheus text: ``easdirect_list_generation``, ``easdirect_instance_attempts_total``... with
``target`` and ``instance`` labels) and hands the families, as ``prometheus_client``'s text
parser reads them, to the registry. This module needs ``prometheus_client``
(``pip install prometheus_client``); ``easdirect`` itself does not, and never imports it.
"""

from __future__ import annotations

import threading
from typing import Dict, Iterator, List

try:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as _e:
    raise ImportError(
        f"easdirect.prometheus needs prometheus_client ({_e}): pip install prometheus_client"
    ) from _e

from ._client import Client
from ._errors import ClosedError

__all__ = ["Collector"]


class Collector:
    """Collects the metrics of ``clients`` (more with :meth:`add`) at each scrape: one family
    per metric name, with the samples of every client (told apart by their ``target`` label).
    Register one collector for all your clients: two collectors in one registry would expose
    each family twice. A closed client is skipped. The collector holds its clients: :meth:`remove`
    one (or unregister the collector) to let it go."""

    def __init__(self, *clients: Client) -> None:
        for client in clients:
            _check(client)
        self._lock = threading.Lock()
        self._clients: List[Client] = list(clients)

    def add(self, client: Client) -> None:
        """Collects ``client`` too (once, however often it is added)."""
        _check(client)
        with self._lock:
            if all(c is not client for c in self._clients):
                self._clients.append(client)

    def remove(self, client: Client) -> None:
        """Stops collecting ``client``; no-op when it is not collected."""
        with self._lock:
            self._clients = [c for c in self._clients if c is not client]

    def describe(self) -> List[Metric]:
        """Nothing, so that registering the collector reads no client (a registry made with
        ``auto_describe``, as the default one is, would otherwise collect at registration)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The families of every open client's :meth:`~easdirect.Client.metrics_text`."""
        with self._lock:
            clients = list(self._clients)
        families: Dict[str, Metric] = {}
        for client in clients:
            try:
                text = client.metrics_text()
            except ClosedError:
                continue
            for family in text_string_to_metric_families(text):
                seen = families.get(family.name)
                if seen is None:
                    families[family.name] = family
                else:
                    seen.samples.extend(family.samples)
        yield from families.values()


def _check(client: object) -> None:
    if not isinstance(client, Client):
        raise TypeError(f"expected an easdirect.Client, got {type(client).__name__}")
