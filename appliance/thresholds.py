"""Threshold tuning on stored scores: what a candidate T1/T2 would have done (replayed through the
same :func:`models.decision.decide` as the line, debounce included, or read from the hourly
aggregates of a long history), and the score sets with presets that the console's histogram shows."""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from appliance.storage import history, queries
from appliance.storage.models import utcnow
from models.calibration import MIN_SCORES, calibrate, max_f1_threshold
from models.decision import Debounce, Thresholds, decide

SHIFT_HOURS = 8


REPLAY_MAX = 20_000  # raw rows a preview replays one by one (debounce included); beyond: the aggregates


@dataclass
class Window:
    """What the history holds of a window: the aggregates of its rolled-up hours, and the counts
    of its rows not rolled up yet (under the candidate thresholds)."""

    since: dt.datetime
    past: history.Hour
    fresh: dict[str, int]  # by the candidate thresholds
    fresh_ok: int  # decided OK by the line
    first: dt.datetime | None

    @property
    def count(self) -> int:
        return self.past.count + sum(self.fresh.values())


def window(engine: Engine, *, hours: float, thresholds: Thresholds, scope: dict[str, str | None]) -> Window:
    """The last ``hours``, rounded out to whole hours (the aggregates' unit)."""
    since = history.floor_hour(utcnow() - dt.timedelta(hours=hours))
    past = sum((agg for _, _, agg in history.hours(engine, since=since, **scope)), history.Hour())
    fresh, fresh_ok, first = history.fresh_counts(engine, since=since, t1=thresholds.t1, t2=thresholds.t2, **scope)
    firsts = [t for t in (past.first_capture, first) if t is not None]
    return Window(since, past, fresh, fresh_ok, min(firsts) if firsts else None)


def raw_complete(engine: Engine, win: Window, limit: int, scope: dict[str, str | None]) -> bool:
    """Whether every inspection of the window is still a raw row, and at most ``limit`` of them."""
    if win.count > limit:
        return False
    return history.raw_count(engine, since=win.since, limit=limit + 1, **scope) == win.count


def _binned(hist: history.Histogram, thresholds: Thresholds) -> dict[str, int]:
    centres, counts = hist.values()
    ng = centres >= thresholds.t2
    review = ~ng & (centres >= thresholds.t1)
    return {"ok": int(counts[~ng & ~review].sum()), "review": int(counts[review].sum()), "ng": int(counts[ng].sum())}


def preview(
    engine: Engine,
    *,
    thresholds: Thresholds,
    hours: float,
    debounce: tuple[int, int] | None = None,
    scope: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    """What candidate thresholds would have done over the last ``hours`` (rounded out to whole
    hours; of one source and model version, with ``scope``): alerts per hour and per shift, and
    the confirmed defects they would have missed.

    Stored scores are replayed one by one through the line's decision, debounce included, while
    the window's rows are all still raw and at most :data:`REPLAY_MAX`; otherwise the rolled-up
    hours are read from their aggregates (scores resolved to 0.5 %, no debounce) and the newest
    rows are counted in the database: as fast over 30 days as over one hour."""
    scope = scope or {}
    win = window(engine, hours=hours, thresholds=thresholds, scope=scope)
    replayed = raw_complete(engine, win, REPLAY_MAX, scope)
    counts = {"ok": 0, "review": 0, "ng": 0}
    if replayed:
        states: dict[str, Debounce] = {}
        for source_id, score in queries.scores_in_order(engine, since=win.since, **scope):
            state = states.setdefault(source_id, Debounce(*debounce)) if debounce else None
            counts[decide(score, thresholds, state)] += 1
    else:
        for part in (_binned(win.past.ok_scores, thresholds), _binned(win.past.flagged_scores, thresholds), win.fresh):
            counts = {k: counts[k] + part[k] for k in counts}
    confirmed = [s for s, _ in queries.alert_scores(engine, since=win.since, states=("confirmed",), **scope)]
    span = max((utcnow() - win.first).total_seconds() / 3600, 1 / 60) if win.first else hours
    flagged = counts["ng"] + counts["review"]
    return {
        "hours": span,
        "inspections": sum(counts.values()),
        "alerts_per_hour": flagged / span,
        "ng_per_hour": counts["ng"] / span,
        "review_per_hour": counts["review"] / span,
        "alerts_per_shift": flagged / span * SHIFT_HOURS,
        "confirmed_defects": len(confirmed),
        "missed_confirmed_defects": sum(decide(c, thresholds) == "ok" for c in confirmed),
        "replayed": replayed,
    }


def _sample(hist: history.Histogram, n: int) -> list[float]:
    """About ``n`` values spread over the histogram's bins in proportion to their counts."""
    centres, counts = hist.values()
    if not counts.size or n <= 0:
        return []
    return np.repeat(centres, np.round(counts * (n / counts.sum())).astype(np.int64)).tolist()


def score_sets(
    engine: Engine, *, hours: float, limit: int, scope: dict[str, str | None] | None = None
) -> dict[str, list[float]]:
    """Scores of the last ``hours`` (whole hours; of one source and model version, with
    ``scope``): ``normal`` (OK decisions, alerts judged false positive), ``flagged`` (alerts not
    judged yet) and ``confirmed`` (alerts confirmed as defects), at most ``limit`` of each.

    While the window's rows are all raw and no more than ``limit``, these are the stored scores.
    Otherwise ``normal`` and ``flagged`` are samples in proportion: the rolled-up hours'
    histograms (scores resolved to 0.5 %) and the newest raw scores, by their shares of the
    window; the aggregates do not know which flagged items were judged, so the judged alerts'
    scores (in their share of the sample) are taken out of ``flagged`` at the nearest values. A
    fast line flags tens of thousands of items a day: fetched one by one they were most of this
    call's time (and the newest ``limit`` of them only the last few hours). The judged alerts are
    always read one by one: operators judge hundreds, not tens of thousands."""
    scope = scope or {}
    win = window(engine, hours=hours, thresholds=Thresholds(0.0, 0.0), scope=scope)  # any pair: only counts used
    judged = queries.alert_scores(engine, since=win.since, states=("confirmed", "false_positive"), limit=limit, **scope)
    false_positives = [s for s, st in judged if st == "false_positive"]
    if raw_complete(engine, win, limit, scope):
        rows = queries.recent_scores(engine, since=win.since, limit=limit, **scope)
        normal = [s for s, d in rows if d == "ok"]
        unjudged = queries.alert_scores(engine, since=win.since, states=("open", "acknowledged"), limit=limit, **scope)
        flagged = [s for s, _ in unjudged]
    else:
        normal = _in_proportion(engine, win, limit, scope, ("ok",), win.fresh_ok, win.past.ok_scores)
        fresh_flagged = sum(win.fresh.values()) - win.fresh_ok
        flagged = _in_proportion(engine, win, limit, scope, ("review", "ng"), fresh_flagged, win.past.flagged_scores)
        share = len(flagged) / max(win.past.flagged_scores.total + fresh_flagged, 1)
        flagged = _without(flagged, [s for s, _ in judged], share)
    return {
        "normal": normal + false_positives,
        "flagged": flagged,
        "confirmed": [s for s, st in judged if st == "confirmed"],
    }


def _without(sample: list[float], judged: list[float], share: float) -> list[float]:
    """``sample`` less, for ``share`` of the ``judged`` scores (spread over their range), the
    sample's value nearest to each."""
    k = min(round(share * len(judged)), len(sample))
    if not k:
        return sample
    rest = sorted(sample)
    for score in np.sort(judged)[np.linspace(0, len(judged) - 1, k).round().astype(np.int64)]:
        i = bisect.bisect_left(rest, score)
        if i == len(rest) or (i and score - rest[i - 1] <= rest[i] - score):
            i -= 1
        del rest[i]
    return rest


def _in_proportion(
    engine: Engine,
    win: Window,
    limit: int,
    scope: dict[str, str | None],
    decisions: tuple[str, ...],
    fresh: int,
    past: history.Histogram,
) -> list[float]:
    """About ``limit`` scores of ``decisions`` over the window: the newest raw rows and a sample
    of the rolled-up hours' histogram, by their shares of the window."""
    fresh_share = round(limit * fresh / max(past.total + fresh, 1))
    scores = history.fresh_scores(engine, since=win.since, limit=fresh_share, decisions=decisions, **scope)
    return scores + _sample(past, min(limit - len(scores), past.total))


def presets(
    sets: dict[str, list[float]],
    current: Thresholds,
    false_alarm_rate: float,
    upper: float | None = None,
) -> dict[str, dict[str, float]]:
    """T1/T2 at a target false-alarm rate, and max-F1 where defects are confirmed, from
    :func:`score_sets`. Both take for good parts every item not confirmed as a defect.

    The false-alarm preset applies the model's own calibration rule (given ``MIN_SCORES`` or
    more; ``upper``: the score's attainable maximum) to the OK items, those judged false positive
    and the alerts not judged yet. The OK items alone are the good parts *below the current T1*: a
    tail quantile of them lands below T1 (at a 1 % target with T1 at 10 %, about 11 % of good
    parts NG). Counting an unjudged defect as good can only raise the thresholds, so the target
    holds as an upper bound; judging alerts sharpens it (``unjudged``: how many were counted)."""
    out: dict[str, dict[str, float]] = {}
    normal, unjudged, confirmed = sets["normal"], sets["flagged"], sets["confirmed"]
    good = normal + unjudged
    if len(good) >= MIN_SCORES:
        fit = calibrate(good, false_alarm_rate, upper=upper)
        out["false_alarm_rate"] = {
            "t1": fit.t1,
            "t2": fit.t2,
            "rate": false_alarm_rate,
            "n": float(fit.n),
            "unjudged": float(len(unjudged)),
        }
    if good and confirmed:
        t2, f1 = max_f1_threshold(good, confirmed)
        out["max_f1"] = {"t1": min(current.t1, t2), "t2": t2, "f1": f1}
    return out
