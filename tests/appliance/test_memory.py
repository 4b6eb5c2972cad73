"""Freed heap memory goes back to the operating system (appliance.memory)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from appliance.memory import release_free_memory

SCRIPT = """
import sys
from appliance.memory import release_free_memory

def rss_mb():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmRSS"))
    return int(line.split()[1]) / 1024

chunks = [bytearray(100_000) for _ in range(2000)]  # 200 MB of heap (each under the mmap threshold)
keeper = bytearray(100_000)  # still in use, above them: free() alone cannot shrink the heap
held = rss_mb()
del chunks
freed = rss_mb()
trimmed = release_free_memory()
print(held, freed, rss_mb(), trimmed)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; malloc_trim is glibc's")
def test_freed_heap_memory_is_given_back_to_the_system():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    held, freed, after, trimmed = out.stdout.split()
    assert trimmed == "True"
    assert float(held) - float(freed) < 50, "glibc returned the freed heap by itself: the test shows nothing"
    assert float(freed) - float(after) > 150, out.stdout


def test_release_is_safe_to_call_again_and_again():
    assert release_free_memory() == release_free_memory()
