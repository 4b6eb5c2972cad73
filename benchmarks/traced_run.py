"""``appliance`` with Python's allocation tracing, to find what grows in a long run
(``soak_bench.py --trace-memory`` starts the appliance through this).

    python benchmarks/traced_run.py --out DIR [--every 300] -- run --config settings.yaml

Tracing starts when the file ``DIR/start`` appears (the soak creates it once the line is
inspecting, so the first start's training is not traced); from then on every allocation Python
makes (numpy's arrays included) is recorded with 12 frames of its call stack. ``--every`` seconds
later a first snapshot is taken, and at each later interval ``DIR/growth.txt`` is rewritten with
the 25 call sites whose live memory grew most since that first snapshot. What a long-running
process keeps adding shows there; what it replaces (frames, batches) does not.

Memory Python does not see is sampled too, once a minute from the start, into ``DIR/native.tsv``:
what SQLite's connections hold (its caches and statements; ``sqlite3_memory_used``) and, from
glibc's ``mallinfo2``, the bytes malloc has handed out and not had back against the free bytes it
keeps in its arenas (the tracing's own records are part of the bytes in use: their size is
given beside them). Resident memory that grows while the bytes in use stay flat is retained
free memory (fragmentation), not a leak.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import linecache
import sys
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP = 25


def watch(out: Path, every: float) -> None:
    while not (out / "start").exists():
        time.sleep(1)
    tracemalloc.start(12)
    # not this report's own: tracemalloc's records and the source lines read to print them
    ignore = [tracemalloc.Filter(False, f) for f in (tracemalloc.__file__, linecache.__file__, __file__)]
    time.sleep(every)
    first, since = tracemalloc.take_snapshot().filter_traces(ignore), time.monotonic()
    while True:
        time.sleep(every)
        stats = tracemalloc.take_snapshot().filter_traces(ignore).compare_to(first, "traceback")
        growing = [s for s in stats if s.size_diff > 0][:TOP]
        lines = [f"live memory added since the first snapshot, {(time.monotonic() - since) / 60:.1f} minutes ago:"]
        lines.append(
            f"total {sum(s.size_diff for s in stats if s.size_diff > 0) / 1e6:.2f} MB grown in "
            f"{sum(1 for s in stats if s.size_diff > 0)} call sites; largest {len(growing)}:"
        )
        for s in growing:
            lines.append(f"\n+{s.size_diff / 1e3:.1f} kB in {s.count_diff:+d} blocks (now {s.size / 1e3:.1f} kB)")
            lines.extend("    " + line for line in s.traceback.format(most_recent_first=True)[:16])
        (out / "growth.tmp").write_text("\n".join(lines) + "\n")
        (out / "growth.tmp").replace(out / "growth.txt")


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def native_sample() -> dict[str, float]:
    """SQLite's allocated bytes and glibc malloc's bytes in use, kept free and mapped apart (MB);
    a figure the platform lacks is left out."""
    import _sqlite3  # noqa: F401  (loads the SQLite library Python links: dlopen below gets that one)

    process, out = ctypes.CDLL(None), {}
    sqlite = ctypes.util.find_library("sqlite3")
    if sqlite is not None:
        used = ctypes.CDLL(sqlite).sqlite3_memory_used
        used.restype = ctypes.c_int64
        out["sqlite_mb"] = used() / 2**20
    try:
        mallinfo2 = process.mallinfo2
    except AttributeError:
        return out
    mallinfo2.restype = MallInfo2
    info = mallinfo2()
    out |= {
        "malloc_in_use_mb": (info.uordblks + info.hblkhd) / 2**20,
        "of_it_tracemalloc_mb": tracemalloc.get_tracemalloc_memory() / 2**20,  # the tracing's own records
        "malloc_free_kept_mb": info.fordblks / 2**20,
        "malloc_mapped_mb": info.hblkhd / 2**20,
    }
    return out


def sample_native(out: Path, every: float = 60) -> None:
    start = time.monotonic()
    with (out / "native.tsv").open("w") as f:
        while True:
            sample = native_sample()
            if f.tell() == 0:
                f.write("\t".join(["minute", *sample]) + "\n")
            minute = (time.monotonic() - start) / 60
            f.write("\t".join([f"{minute:.1f}", *(f"{v:.1f}" for v in sample.values())]) + "\n")
            f.flush()
            time.sleep(every)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--every", type=float, default=300, help="seconds between snapshots")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the appliance command line")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    threading.Thread(target=watch, args=(args.out, args.every), daemon=True, name="traced-run").start()
    threading.Thread(target=sample_native, args=(args.out,), daemon=True, name="traced-native").start()
    sys.path.insert(0, str(ROOT))
    from appliance.cli import main as appliance

    sys.argv = ["appliance", *(a for a in args.command if a != "--")]
    sys.exit(appliance())


if __name__ == "__main__":
    main()
