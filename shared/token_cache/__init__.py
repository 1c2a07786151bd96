"""The token cache, behind one entry point: ``TokenCache.open(key) -> PartitionHandle``; l1 (in-process
partitions), l2 (shared backends behind a breaker), sealing (AES-GCM before a partition leaves the
process) and msal_adapter (the one cache MSAL sees) live behind it."""
from .l1 import Partition, PartitionStore
from .l2 import Backend, BlobBackend, Breaker, RedisBackend, backend_for
from .layers import PREFIX, REFRESH_MARGIN, PartitionHandle, TokenCache, partition_key
from .msal_adapter import PartitionedTokenCache, use_partition
from .sealing import Sealer

__all__ = ["Backend", "BlobBackend", "Breaker", "PREFIX", "Partition", "PartitionHandle", "PartitionStore",
           "PartitionedTokenCache", "REFRESH_MARGIN", "RedisBackend", "Sealer", "TokenCache", "backend_for",
           "partition_key", "use_partition"]
