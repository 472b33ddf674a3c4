"""What a DAG's Slack message says of its run's results, read from the run's artifacts (the
records the trainer steps leave in the run's folder, :mod:`operators.contract`), which are not in the template
context. Each function takes ``read`` (a URI to its JSON, or None) and the run's prefix, and
returns Slack markup (:class:`operators.mrkdwn.Mrkdwn`) in which every value read is escaped:
ids, anomaly lines and alerts are data, and may hold ``<!here>`` or a link."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from operators import contract
from operators.contract import join
from operators.mrkdwn import Mrkdwn, escape, link
from operators.ui_links import report_url

Reader = Callable[[str], Any]


def data_lines(read: Reader, run: str) -> Mrkdwn:
    """The run date's event statistics (two lines, the trainer's own wording) and any anomaly an
    operator accepted."""
    stats = read(join(run, contract.EVENT_STATS_RECORD))
    if not stats:
        return Mrkdwn("no event statistics found for this run")
    lines = [f"data: {escape(line)}" for line in stats.get("summary", [])]
    if stats.get("accepted"):
        lines.append("anomalies accepted: " + "; ".join(escape(a) for a in stats.get("anomalies", [])))
    return Mrkdwn("\n".join(lines))


def _value(value: Any, digits: int | None = None) -> str:
    """A number or setting read from a record, as text (a float as ``:g``, or to ``digits``), escaped."""
    if isinstance(value, float):
        return escape(f"{value:.{digits}f}" if digits is not None else f"{value:g}")
    return escape(value)


def settings_line(trials: dict[str, Any] | None) -> str:
    """``settings: ...`` (the model's factors, regularization, alpha and weighting) and where they
    came from, from the model's ``trials.json``; empty for a model without one (trained before
    the search existed)."""
    if not isinstance(trials, dict) or not isinstance(trials.get("settings"), dict):
        return ""
    chosen = trials["settings"]
    named = ", ".join(f"{name} {_value(chosen[name])}"
                      for name in ("factors", "regularization", "alpha", "weighting") if name in chosen)
    source, note = trials.get("source"), trials.get("note")
    if source == "search":
        ran = trials.get("trials") or []
        winner = next((t for t in ran if isinstance(t, dict) and t.get("winner")), None)
        k = trials.get("k")
        best = winner and winner.get(f"ndcg_at_{k}")
        # Fitted at least once: the plan and the budget may leave candidates untried.
        tried = sum(1 for t in ran if isinstance(t, dict) and (t.get("rung") or 0) >= 0)
        origin = f"searched this run: {tried} of {len(ran)} candidates tried" + (
            f", best validation ndcg@{_value(k)} {_value(best, 4)}" if best is not None else "")
    elif source == "reused":
        origin = (f"reused from the search of {_value(trials.get('tuned_on'))}, "
                  f"model {_value(trials.get('tuned_model_id'))}")
    elif source == "default":
        origin = "today's defaults"
    elif source == "params":
        origin = "set by the run's params"
    else:
        origin = f"source {_value(source)}"
    if note:
        origin += f"; no search ran: {_value(note)}"
    return f"\nsettings: {named} ({origin})"


def train(read: Reader, run: str) -> Mrkdwn:
    """The data, the settings the run's model was trained with, its evaluation, and whether it
    was published."""
    data = data_lines(read, run)
    candidate = read(join(run, contract.CANDIDATE_RECORD))
    if not candidate:
        return Mrkdwn(f"{data}\nno trained model found for this run")
    settings = settings_line(read(join(candidate["model_uri"], contract.TRIALS_RECORD)))
    ev = read(join(candidate["model_uri"], contract.EVALUATION_RECORD))
    if not ev:
        return Mrkdwn(f"{data}\nmodel {escape(candidate['model_id'])} has no evaluation{settings}")
    k, metrics = ev["k"], ev["metrics"]
    names = ("precision", "recall", "map", "ndcg")
    line = " | ".join(
        f"{name}: " + ", ".join(f"{m}@{k} {metrics[name][m]:.4f}" for m in names)
        for name in ("model", "popularity", "published") if metrics.get(name))
    promotion = read(join(run, contract.PROMOTION_RECORD))
    published = ""
    if promotion:
        published = ("\npublished" if promotion["published"]
                     else f"\nnot published: {escape(promotion['reason'])}")
    return Mrkdwn(f"{data}\nmodel {escape(ev['model_id'])} verdict *{escape(ev['verdict'].upper())}*: "
                  f"{escape(line)}{settings}{published}\n"
                  f"{link(report_url(ev['model_id']), 'Evaluation report')}")


def predict(read: Reader, run: str) -> Mrkdwn:
    """The rows the run published."""
    p = read(join(run, contract.PREDICTIONS_RECORD))
    if not p:
        return Mrkdwn("no predictions summary found")
    return Mrkdwn(f"rows written: {escape(p['rows_written'])} for {escape(p['users'])} users "
                  f"(model {escape(p['model_id'])}) into {escape(p['table'])}")


def feedback_alerts(read: Reader, run: str) -> Mrkdwn:
    """The served model's alerts, one per line; empty when there is nothing to alert on."""
    result = read(join(run, contract.SERVING_METRICS_RECORD))
    if not result or not result.get("alerts"):
        return Mrkdwn("")
    return Mrkdwn("\n".join(escape(alert) for alert in result["alerts"]) + f"\n{escape(result['summary'])}")


def forget(read: Reader, run: str) -> Mrkdwn:
    """How much was erased where (the forget step's record holds counts, never an id)."""
    f = read(join(run, contract.FORGET_RECORD))
    if not f:
        return Mrkdwn("no forget record found")
    if not f.get("total"):
        return Mrkdwn(f"forgot {escape(f['learners'])} learner(s): nothing left to erase")
    return Mrkdwn(f"forgot {escape(f['learners'])} learner(s), erased: "
                  + "; ".join(f"{escape(place)} {n:,}" for place, n in f["erased"].items()))


def decision(read: Reader, run: str) -> Mrkdwn:
    """The broken rules and the day's figures a person is asked to decide on."""
    stats = read(join(run, contract.EVENT_STATS_RECORD)) or {}
    rules = [f"• {escape(a)}" for a in stats.get("anomalies") or []]
    figures = [f"data: {escape(line)}" for line in stats.get("summary") or []]
    return Mrkdwn("\n".join(rules + figures))


SUMMARIES: dict[str, Callable[[Reader, str], Mrkdwn]] = {
    "train": train, "predict": predict, "feedback": feedback_alerts, "forget": forget,
    "decision": decision}
