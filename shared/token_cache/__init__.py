"""The token cache, behind one entry point: ``TokenCache.open(key) -> PartitionHandle``; l1 (in-process
partitions), l2 (shared backends behind a breaker), sealing (AES-GCM before a partition leaves the
process) and msal_adapter (the one cache MSAL sees) live behind it."""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .l1 import Partition, PartitionStore
from .layers import PREFIX, REFRESH_MARGIN, PartitionHandle, TokenCache, partition_key
from .msal_adapter import PartitionedTokenCache, use_partition

if TYPE_CHECKING:
    from .l2 import Backend, BlobBackend, Breaker, RedisBackend, backend_for
    from .sealing import Sealer

# The shared (L2) layer and its sealing load on first use (PEP 562), by an app whose TokenCache__L2 names one
# (shared/context.py build_token_cache): an in-process-only cache never imports them, nor cryptography's AEAD.
_LAZY = {"Backend": "l2", "BlobBackend": "l2", "Breaker": "l2", "RedisBackend": "l2", "backend_for": "l2",
         "Sealer": "sealing"}

__all__ = ["Backend", "BlobBackend", "Breaker", "PREFIX", "Partition", "PartitionHandle", "PartitionStore",
           "PartitionedTokenCache", "REFRESH_MARGIN", "RedisBackend", "Sealer", "TokenCache", "backend_for",
           "partition_key", "use_partition"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
