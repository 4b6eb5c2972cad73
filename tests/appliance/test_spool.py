"""The spool keeps what the database could not take: in order, bounded, through a kill -9."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
from pathlib import Path

from appliance.storage.models import Inspection
from appliance.storage.spool import Spool

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import datetime as dt, sys, time
from appliance.storage.models import Inspection
from appliance.storage.spool import Spool
spool = Spool(sys.argv[1])
t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
for n in range(50):
    i = Inspection(source_id="s", t_capture=t0 + dt.timedelta(seconds=n), score=n, norm_score=0.1,
                   decision="ng" if n % 5 == 0 else "ok", model_version="v", latency_ms=1.0)
    spool.put([(i, 0.5, f"event-{n}" if n % 5 == 0 else None)])
print("written", flush=True)
time.sleep(60)
"""


def test_spooled_items_survive_a_kill_and_come_back_in_order(tmp_path):
    path = tmp_path / "spool.db"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "written"
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    spool = Spool(path)
    entries = spool.peek(100)
    assert len(spool) == 50 and [item[0].score for _, item in entries] == list(range(50))
    assert [item[2] for _, item in entries][:6] == ["event-0", None, None, None, None, "event-5"]
    spool.remove([row_id for row_id, _ in entries[:10]])
    assert len(spool) == 40 and spool.peek(1)[0][1][0].score == 10


def test_a_full_spool_gives_back_what_did_not_fit(tmp_path):
    spool = Spool(tmp_path / "s.db", max_items=3)
    now = dt.datetime.now(dt.UTC)
    items = [
        (
            Inspection(
                source_id="s", t_capture=now, score=n, norm_score=0, decision="ok", model_version="v", latency_ms=1
            ),
            1.0,
            None,
        )
        for n in range(5)
    ]
    refused = spool.put(items)
    assert len(spool) == 3 and [i.score for i, _, _ in refused] == [3, 4]
