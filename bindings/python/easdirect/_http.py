"""The policy shared by the HTTP helpers (DESIGN.md, "HTTP helpers in the bindings"):

- a request whose URL host is the client's service name, or an alias the caller gives, is sent
  to ``{scheme}://{instance.host}`` with its path and query kept (other hosts pass through
  untouched);
- after a connection error, a timeout, a 5xx or a 429 it is sent again on a different instance
  (``select_excluding`` every instance tried), for every method unless
  ``retry_non_idempotent=False`` (then POST and PATCH get one attempt); a 4xx other than 429 is
  returned at once;
- ``max_attempts`` (default 3) attempts in all, never more than the number of instances (the
  exclusion runs out first);
- ``report_success`` when an instance answered with a status below 500 other than 429,
  ``report_failure`` otherwise; the request body is replayed on each attempt.

When every attempt failed, the last response is returned (a 5xx or 429), or the last exception
raised.
"""

from __future__ import annotations

from typing import Iterable, List, Optional

from ._client import Client, Instance
from ._errors import NoInstanceError

#: Methods that RFC 9110 defines as idempotent; the others (POST, PATCH) are retried only while
#: ``retry_non_idempotent`` is true (the default: EAS predict calls are POSTs).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})

DEFAULT_MAX_ATTEMPTS = 3


def is_retryable_status(status: int) -> bool:
    """A 5xx or a 429: the instance did not serve the request; try another."""
    return status >= 500 or status == 429


class Policy:
    """Name matching, attempt budget and instance picks for one helper."""

    def __init__(
        self,
        client: Client,
        aliases: Iterable[str] = (),
        scheme: str = "http",
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_non_idempotent: bool = True,
    ) -> None:
        if not isinstance(client, Client):
            raise TypeError(f"client must be an easdirect.Client, got {type(client).__name__}")
        if isinstance(aliases, str):
            aliases = (aliases,)
        names = {a.lower() for a in aliases}
        if client.service:
            names.add(client.service.lower())
        if not names:
            raise ValueError(
                "the client's target names no service (static://): give aliases=[...] with the "
                "host name(s) to route through it"
            )
        if scheme not in ("http", "https"):
            raise ValueError(f"scheme must be 'http' or 'https', not {scheme!r}")
        if int(max_attempts) < 1:
            raise ValueError("max_attempts must be at least 1")
        self.client = client
        self.names = frozenset(names)
        self.scheme = scheme
        self.max_attempts = int(max_attempts)
        self.retry_non_idempotent = bool(retry_non_idempotent)

    def matches(self, host: Optional[str]) -> bool:
        """True when a request to ``host`` goes through the client."""
        return bool(host) and host.lower() in self.names  # type: ignore[union-attr]

    def attempts(self, method: str) -> int:
        """The attempt budget of a request with this method."""
        if self.retry_non_idempotent or method.upper() in IDEMPOTENT_METHODS:
            return self.max_attempts
        return 1

    def first(self) -> Instance:
        """The first instance (raises NoInstanceError when none is known)."""
        return self.client.select()

    def next(self, tried: List[int]) -> Optional[Instance]:
        """An instance not tried yet, or None when every instance was tried."""
        try:
            return self.client.select_excluding(tried)
        except NoInstanceError:
            return None
