"""The one ``msal.TokenCache`` MSAL sees, reading and writing whichever partition is current.

MSAL binds a cache to a ConfidentialClientApplication, which should live once per process; so its storage
is the partition a ``contextvars`` variable names for one acquisition (as MIW's ``MsalDistributedTokenCacheAdapter``
swaps it). It leans on MSAL's ``TokenCache`` using ``self._cache`` under ``self._lock`` (test_token_cache pins that)."""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator

import msal

from .l1 import Partition

_current: contextvars.ContextVar["Partition | None"] = contextvars.ContextVar("msal_partition", default=None)


class PartitionedTokenCache(msal.TokenCache):
    """The cache handed to MSAL; its storage is whatever partition is current."""

    @property  # type: ignore[override]
    def _cache(self) -> dict[str, Any]:
        part = _current.get()
        if part is None:
            raise RuntimeError("MSAL token cache used outside a partition")
        return part.data

    @_cache.setter
    def _cache(self, value: dict[str, Any]) -> None:
        if value:  # TokenCache.__init__ assigns {}; nothing else may replace a partition wholesale
            raise RuntimeError("partitions are not replaced wholesale")


@contextlib.contextmanager
def use_partition(part: Partition) -> Iterator[Partition]:
    """Make ``part`` the storage of the shared MSAL cache for this context. Reads need no partition
    lock (MSAL's guards the data); callers that may call Entra take ``part.lock``: concurrent misses make one call."""
    token = _current.set(part)
    try:
        yield part
    finally:
        _current.reset(token)
