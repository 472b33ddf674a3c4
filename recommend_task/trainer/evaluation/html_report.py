"""One model's evaluation as a self-contained HTML page (``report.html`` beside ``evaluation.json``).

Everything is inline: the styles, and the charts as SVG drawn here. The page has no script and
fetches nothing, so it opens from a bucket, a mail attachment or an Airflow plugin page the same.
It is rendered from ``evaluation.json`` alone: what the page shows is what the file records.

The figures beyond the metrics (:func:`distributions`), per recommender on the evaluated users:

* per-user recall@k, in ten bins of width 0.1 (the last one holds 1.0);
* popularity bias: the share of the recommended slots on each popularity decile of the catalogue
  (decile 1 = the tenth of the items with the most training users), and the mean share of
  training users the recommended items have (popularity's own baseline maximises it).
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import scipy.sparse as sp

from trainer.evaluation.ranking_metrics import hits_matrix

RECOMMENDERS = ("model", "popularity", "published")
METRICS = ("precision", "recall", "map", "ndcg")
BINS = 10
_COLOURS = {"model": "#1f6feb", "popularity": "#9a6700", "published": "#6e7781"}


def distributions(picks: dict[str, np.ndarray], holdout: sp.csr_matrix, item_users: np.ndarray,
                  k: int) -> dict[str, dict[str, Any]]:
    """Per recommender (its ``users x k`` picks in the matrices' item space, -1 = empty slot):
    the histogram of per-user recall@k over users with holdout items, and the popularity bias
    of its picks against ``item_users`` (distinct training users per item)."""
    n_relevant = holdout.getnnz(axis=1)
    judged = n_relevant > 0
    order = np.argsort(-item_users, kind="stable")
    decile = np.empty(len(item_users), dtype=np.int64)
    decile[order] = np.arange(len(item_users)) * BINS // max(len(item_users), 1)
    n_users = max(int(item_users.max(initial=0)), 1)
    out = {}
    for name, chosen in picks.items():
        chosen = chosen[:, :k]
        hits = hits_matrix(chosen, holdout)[judged].sum(axis=1)
        recall = hits / n_relevant[judged]
        counts, _ = np.histogram(recall, bins=BINS, range=(0.0, 1.0))
        slots = chosen[chosen >= 0]
        by_decile = np.bincount(decile[slots], minlength=BINS) if slots.size else np.zeros(BINS, int)
        out[name] = {
            "recall_histogram": [int(c) for c in counts],
            "users_with_no_hit": int((hits == 0).sum()),
            "popularity_deciles": [float(c / slots.size) if slots.size else 0.0 for c in by_decile],
            "mean_item_user_share": float(item_users[slots].mean() / n_users) if slots.size else 0.0,
        }
    return out


def render(evaluation: dict[str, Any]) -> str:
    """The report of one ``evaluation.json``."""
    e = evaluation
    k = e["k"]
    metrics = {name: values for name, values in e["metrics"].items() if values}
    dists = e.get("distributions") or {}
    names = [n for n in RECOMMENDERS if n in metrics]
    title = f"Evaluation of {e['model_id']}"
    published = e.get("published_model_id")
    parts = [
        f"<h1>{_h(title)}</h1>",
        f"<p class='verdict {_h(e['verdict'])}'>Verdict <strong>{_h(e['verdict'].upper())}</strong>: "
        f"{_h('; '.join(e.get('reasons') or []))}</p>",
        "<dl>",
        _dd("run date", e["run_date"]), _dd("evaluated", e.get("evaluated_at", "")),
        _dd("users", f"{e['eval_users']:,} of {e.get('holdout_users', e['eval_users']):,} "
            "with holdout items"),
        _dd("primary metric", f"{e['primary_metric']}@{k} (lift over popularity at least "
            f"{e['min_lift']:.0%}, regression against the published model at most "
            f"{e['max_regression']:.0%})"),
        _dd("compared with", f"published model {published}" if published else "popularity only"),
        "</dl>",
        f"<h2>Metrics @{k}</h2>", _metrics_table(metrics, names, k),
        _bars("metrics", [f"{m}@{k}" for m in METRICS],
              {n: [metrics[n][m] for m in METRICS] for n in names}, "value"),
        f"<h2>Catalogue coverage @{k}</h2>",
        _bars("coverage", ["coverage"], {n: [metrics[n]["coverage"]] for n in names}, "share of items"),
    ]
    if dists:
        labels = [f"{i / BINS:.1f}-{(i + 1) / BINS:.1f}" for i in range(BINS)]
        parts += [
            f"<h2>Per-user recall@{k}</h2>",
            "<p>Users per bin of their recall; users with no hit: "
            + ", ".join(f"{_h(n)} {dists[n]['users_with_no_hit']:,}" for n in names if n in dists) + ".</p>",
            _bars("recall_histogram", labels, {n: dists[n]["recall_histogram"] for n in names if n in dists},
                  "users"),
            "<h2>Popularity bias</h2>",
            "<p>Share of the recommended slots per popularity decile of the catalogue (1 = the most "
            "popular tenth of the items); mean share of training users per recommended item: "
            + ", ".join(f"{_h(n)} {dists[n]['mean_item_user_share']:.4f}" for n in names if n in dists)
            + ".</p>",
            _bars("popularity_deciles", [str(i + 1) for i in range(BINS)],
                  {n: dists[n]["popularity_deciles"] for n in names if n in dists}, "share of slots"),
        ]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_h(title)}</title><style>{_STYLE}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def _h(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _dd(term: str, value: Any) -> str:
    return f"<dt>{_h(term)}</dt><dd>{_h(value)}</dd>"


def _metrics_table(metrics: dict[str, dict], names: list[str], k: int) -> str:
    head = "".join(f"<th>{m}@{k}</th>" for m in (*METRICS, "coverage"))
    rows = []
    for name in names:
        cells = "".join(f"<td data-recommender='{name}' data-metric='{m}' data-value='{metrics[name][m]!r}'>"
                        f"{metrics[name][m]:.4f}</td>" for m in (*METRICS, "coverage"))
        rows.append(f"<tr><th>{_h(name)}</th>{cells}</tr>")
    return f"<table id='metrics'><tr><th>recommender</th>{head}</tr>{''.join(rows)}</table>"


def _bars(chart: str, labels: list[str], series: dict[str, list[float]], unit: str) -> str:
    """A grouped bar chart: one group per label, one bar per series; each bar carries its value."""
    width, height, left, bottom = 640, 220, 48, 36
    top = max((v for values in series.values() for v in values), default=0) or 1
    group = (width - left) / max(len(labels), 1)
    bar = group * 0.8 / max(len(series), 1)
    shapes = [f"<line x1='{left}' y1='{height - bottom}' x2='{width}' y2='{height - bottom}' class='axis'/>",
              f"<text x='4' y='12' class='unit'>{_h(unit)} (max {top:.4g})</text>"]
    for g, label in enumerate(labels):
        x0 = left + g * group + group * 0.1
        shapes.append(f"<text x='{x0 + group * 0.4:.1f}' y='{height - bottom + 16}' "
                      f"class='label'>{_h(label)}</text>")
        for s, (name, values) in enumerate(series.items()):
            value = values[g]
            h = (height - bottom - 20) * value / top
            shapes.append(
                f"<rect data-series='{name}' data-label='{_h(label)}' data-value='{value!r}' "
                f"x='{x0 + s * bar:.1f}' y='{height - bottom - h:.1f}' width='{bar * 0.9:.1f}' "
                f"height='{h:.1f}' fill='{_COLOURS.get(name, '#888')}'><title>{_h(name)} {_h(label)}: "
                f"{value:.4g}</title></rect>")
    legend = "".join(f"<span class='key' style='background:{_COLOURS.get(n, '#888')}'></span>{_h(n)} "
                     for n in series)
    return (f"<figure><svg id='{chart}' viewBox='0 0 {width} {height}' width='{width}' height='{height}' "
            f"role='img'>{''.join(shapes)}</svg><figcaption>{legend}</figcaption></figure>")


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #1f2328; max-width: 760px; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; }
dt { color: #59636e; } dd { margin: 0; }
table { border-collapse: collapse; } th, td { padding: 4px 10px; border-bottom: 1px solid #d1d9e0; }
td { text-align: right; font-variant-numeric: tabular-nums; }
.verdict.pass strong { color: #1a7f37; } .verdict.fail strong { color: #d1242f; }
svg .axis { stroke: #59636e; } svg text { font-size: 11px; fill: #59636e; }
svg .label { text-anchor: middle; }
.key { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 12px; }
"""
