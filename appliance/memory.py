"""Giving freed heap memory back to the operating system, for a process that runs for months.

glibc keeps memory a program frees in its heaps for reuse and returns little of it by itself:
after the first start's in-process training the appliance held about 730 MB of free heap, 180 MB
of it resident, that the line never used again (``benchmarks/soak_bench.py``). ``malloc_trim(0)``
hands free pages back (about 10 ms for that much). Elsewhere (musl, macOS, Windows) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # no C library by that name, or one without malloc_trim
        return None


def release_free_memory() -> bool:
    """Return the heap's free pages to the operating system; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
