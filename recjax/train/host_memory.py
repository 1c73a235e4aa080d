"""Host-memory allocator settings for XLA:CPU processes.

XLA:CPU allocates each execution's temporaries as one buffer (691 MB for a training step of the
10M-parameter LM at 2,048 tokens) with the C library's `malloc`, and frees it when the step ends.
glibc serves every block above 32 MB with a fresh `mmap` and gives it back with `munmap`, so each
step page-faults the whole buffer in again and the kernel zeroes it: 169k minor faults and ~0.3 s of
system time per 0.8 s step on 2 cores (benchmarks/lm_cpu.py; docs/benchmarks.md, "Host memory").
On accelerators the same happens to host-side buffers, less often.

`retain_host_allocations()` makes glibc keep such memory for reuse instead, the behaviour
TCMalloc (which MaxText's images preload) and JAX's device allocators have: every thread
allocates from the one main heap (`M_ARENA_MAX=1`; a secondary arena can only `mmap` blocks
larger than its 64 MB heaps), large blocks come from that heap rather than `mmap`
(`M_MMAP_MAX=0`), and freed memory is not returned to the system (`M_TRIM_THRESHOLD`). The
process's resident memory then stays at its peak instead of dropping between steps.

`recjax` calls it on import, before JAX creates its CPU client, so that XLA's threads (created
with the client) use the main heap. Set `RECJAX_HOST_ALLOCATOR=system` to leave the C library's
defaults, e.g. when LD_PRELOAD-ing TCMalloc or jemalloc (detected and left alone as well).
"""
from __future__ import annotations

import ctypes
import os
import sys

ENV = "RECJAX_HOST_ALLOCATOR"  # "retain" (default) or "system"

# mallopt(3) parameter numbers, glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER_TRIM = -1  # mallopt's int, read as size_t: the largest threshold

_applied: bool | None = None


def _glibc() -> ctypes.CDLL | None:
  if not sys.platform.startswith("linux"):
    return None
  try:
    libc = ctypes.CDLL(None)  # the process's own symbols: its C library's (no ldconfig lookup)
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    libc.gnu_get_libc_version()  # only glibc has it (not musl)
  except (OSError, AttributeError):
    return None
  return libc


def _preloaded_allocator() -> bool:
  preload = os.environ.get("LD_PRELOAD", "")
  return any(name in preload for name in ("tcmalloc", "jemalloc", "mimalloc"))


def retain_host_allocations() -> bool:
  """Applies the settings above once per process; True when they are in effect.

  A no-op (False) off glibc Linux, under `RECJAX_HOST_ALLOCATOR=system`, or when another
  allocator is preloaded. Raises ValueError for any other value of that variable.
  """
  global _applied
  if _applied is not None:
    return _applied
  mode = os.environ.get(ENV, "retain").strip().lower()
  if mode not in ("retain", "system"):
    raise ValueError(f"{ENV}={os.environ[ENV]!r}: use 'retain' (the default) or 'system'")
  libc = None if mode == "system" or _preloaded_allocator() else _glibc()
  _applied = bool(libc) and all(
      libc.mallopt(param, value) == 1
      for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0),
                           (_M_TRIM_THRESHOLD, _NEVER_TRIM)))
  return _applied
