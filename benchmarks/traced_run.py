"""``appliance`` with Python's allocation tracing, to find what grows in a long run
(``soak_bench.py --trace-memory`` starts the appliance through this).

    python benchmarks/traced_run.py --out DIR [--every 300] -- run --config settings.yaml

Tracing starts when the file ``DIR/start`` appears (the soak creates it once the line is
inspecting, so the first start's training is not traced); from then on every allocation Python
makes (numpy's arrays included) is recorded with 12 frames of its call stack. ``--every`` seconds
later a first snapshot is taken, and at each later interval ``DIR/growth.txt`` is rewritten with
the 25 call sites whose live memory grew most since that first snapshot. What a long-running
process keeps adding shows there; what it replaces (frames, batches) does not.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--every", type=float, default=300, help="seconds between snapshots")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the appliance command line")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    threading.Thread(target=watch, args=(args.out, args.every), daemon=True, name="traced-run").start()
    sys.path.insert(0, str(ROOT))
    from appliance.cli import main as appliance

    sys.argv = ["appliance", *(a for a in args.command if a != "--")]
    sys.exit(appliance())


if __name__ == "__main__":
    main()
