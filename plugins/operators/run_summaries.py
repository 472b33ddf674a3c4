"""What a DAG's Slack message says of its run's results, read from the run's artifacts (the
records the trainer steps leave under ``runs/<run_date>/``), which are not in the template
context. Each function takes ``read`` (a URI to its JSON, or None) and the run's prefix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from operators.artifacts import join
from operators.ui_links import report_url

Reader = Callable[[str], Any]


def data_lines(read: Reader, run: str) -> str:
    """The run date's event statistics (two lines, the trainer's own wording) and any anomaly an
    operator accepted."""
    stats = read(join(run, "event_stats.json"))
    if not stats:
        return "no event statistics found for this run"
    lines = [f"data: {line}" for line in stats.get("summary", [])]
    if stats.get("accepted"):
        lines.append("anomalies accepted: " + "; ".join(stats.get("anomalies", [])))
    return "\n".join(lines)


def train(read: Reader, run: str) -> str:
    """The data, the evaluation of the run's model, and whether it was published."""
    data = data_lines(read, run)
    candidate = read(join(run, "candidate.json"))
    if not candidate:
        return f"{data}\nno trained model found for this run"
    ev = read(join(candidate["model_uri"], "evaluation.json"))
    if not ev:
        return f"{data}\nmodel {candidate['model_id']} has no evaluation"
    k, metrics = ev["k"], ev["metrics"]
    names = ("precision", "recall", "map", "ndcg")
    line = " | ".join(
        f"{name}: " + ", ".join(f"{m}@{k} {metrics[name][m]:.4f}" for m in names)
        for name in ("model", "popularity", "published") if metrics.get(name))
    promotion = read(join(run, "promotion.json"))
    published = ""
    if promotion:
        published = "\npublished" if promotion["published"] else f"\nnot published: {promotion['reason']}"
    return (f"{data}\nmodel {ev['model_id']} verdict *{ev['verdict'].upper()}*: {line}{published}"
            f"\n<{report_url(ev['model_id'])}|Evaluation report>")


def predict(read: Reader, run: str) -> str:
    """The rows the run published."""
    p = read(join(run, "predictions.json"))
    if not p:
        return "no predictions summary found"
    return (f"rows written: {p['rows_written']} for {p['users']} users (model {p['model_id']}) "
            f"into {p['table']}")


def feedback_alerts(read: Reader, run: str) -> str:
    """The served model's alerts, one per line; empty when there is nothing to alert on."""
    result = read(join(run, "serving_metrics.json"))
    if not result or not result.get("alerts"):
        return ""
    return "\n".join(result["alerts"]) + f"\n{result['summary']}"


def forget(read: Reader, run: str) -> str:
    """How much was erased where (the forget step's record holds counts, never an id)."""
    f = read(join(run, "forget.json"))
    if not f:
        return "no forget record found"
    if not f.get("total"):
        return f"forgot {f['learners']} learner(s): nothing left to erase"
    return (f"forgot {f['learners']} learner(s), erased: "
            + "; ".join(f"{place} {n:,}" for place, n in f["erased"].items()))


SUMMARIES: dict[str, Callable[[Reader, str], str]] = {
    "train": train, "predict": predict, "feedback": feedback_alerts, "forget": forget}
