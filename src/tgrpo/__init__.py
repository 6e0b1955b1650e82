"""tgrpo: Trajectory-wise Group Relative Policy Optimization for Vision-Language-Action policies."""

import ctypes
import os

# OpenMP threads that find their core taken (an env worker, a second job) sleep instead of spinning. With
# libgomp's default wait, a 2-thread SFT step on the 2-core machine became many times slower whenever another
# process was busy; passive waiting costs a little on an idle machine (docs/performance.md, "OpenMP wait
# policy"). libgomp reads the variable when torch loads, so it is set here, before any torch import of the
# package; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# glibc's malloc serves blocks above a threshold (128 KiB, raised only when such a block is freed) with
# fresh mmap'd pages and returns freed memory at the heap's top to the system, so every policy call touches
# new pages: about 7,600 page faults and 16 ms of a 45 ms encoder call on 8 images (docs/performance.md,
# "Memory allocator"). A fixed 32 MiB mmap threshold and a 256 MiB trim threshold keep the freed blocks for
# the next call. Skipped where the C library has no mallopt (not glibc) and where the user set glibc's
# MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ (their values are kept).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _keep_freed_memory() -> None:
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    mallopt(_M_TRIM_THRESHOLD, 256 << 20)


_keep_freed_memory()

__version__ = "0.1.0"
