"""Children that ``up`` starts (Azurite, the Functions host) run in sessions of their own, so the terminal's
Ctrl-C reaches ``up`` alone and it stops them in order; the price is that they would outlive an ``up`` killed
outright (SIGKILL, an OOM kill). ``die_with_parent`` closes that gap on Linux: the kernel sends the child
SIGTERM when ``up`` dies, however it dies."""
from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1
# Looked up here, in the parent: between fork and exec the child calls it and nothing else (no dlopen there).
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    """A ``preexec_fn``: runs in the child between fork and exec (a spawning thread's exit counts as the
    parent's death, so only the main thread starts these children)."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
