"""The Recommender page's HTML: the overview (charts and the model table) and a page per model
(lineage, tuning trials, report, rollback). Server-rendered from
:class:`recommender.store.RecommenderStore`'s data; the only script (static/page.js) routes
Airflow links and makes the rollback button's call to Airflow's own REST API."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import urllib.parse
from functools import cache
from html import escape
from pathlib import Path
from typing import Any

from operators.ui_links import RECOMMENDER_PREFIX, required_action_url, run_url, task_url
from operators.ui_links import base_url as ui_base_url
from recommender.charts import Marker, Point, Series, line_chart

DAY_CHOICES = (30, 90, 365)
MODEL_ID = re.compile(r"als-[0-9]{8}-[0-9a-f]{10}")  # the app's model ids (and the pages' URLs)
TUNING_SOURCES = {
    "search": "searched by this model's run",
    "reused": "reused from an earlier search",
    "default": "today's defaults",
    "params": "set by the run's params",
}
SETTINGS = ("factors", "regularization", "alpha", "weighting", "iterations")


STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"page.css": "text/css; charset=utf-8", "page.js": "text/javascript; charset=utf-8"}
# Every page's policy: nothing inline, nothing from elsewhere. Its one script and one stylesheet
# come from the app's own static route; the charts are inline SVG (presentation attributes, no
# style attributes); the model page frames its report, on this origin.
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'")


@cache
def static_version(name: str) -> str:
    """A digest of the static file, in its URL: a deployment's new file is fetched, not a cached one."""
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]


def static_url(name: str) -> str:
    """The path of one of the app's static files, below Airflow's [api] base_url."""
    root = urllib.parse.urlsplit(ui_base_url()).path.rstrip("/")
    return f"{root}{RECOMMENDER_PREFIX}/static/{name}?v={static_version(name)}"


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
            f'<link rel="stylesheet" href="{escape(static_url("page.css"))}"></head><body>{body}'
            f'<script src="{escape(static_url("page.js"))}"></script></body></html>')


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return escape(str(value))


def _link(url: str, text: str) -> str:
    return f'<a href="{escape(url, quote=True)}">{escape(text)}</a>'


def _airflow_link(url: str, text: str) -> str:
    """A link to a page of Airflow's own UI (a run, a task log): opened by the UI's router."""
    return f'<a href="{escape(url, quote=True)}" data-airflow>{escape(text)}</a>'


def _run_link(dag_id: str, run_id: str | None, base: str, missing: str = "–") -> str:
    """A link to the Airflow run ``run_id`` of ``dag_id``, or ``missing`` where none is recorded."""
    return _airflow_link(run_url(dag_id, run_id, base), run_id) if run_id else missing


def unavailable_page(message: str) -> str:
    """What the page shows while BigQuery or Cloud Storage does not answer (with a 503)."""
    return _page("Recommender", "<h1>Recommender</h1>"
                 f'<div class="banner error" id="unavailable"><b>The recommender\'s data cannot be read '
                 f"right now.</b><br>{escape(message)}<br>Airflow itself is fine; reload this page once "
                 "the service answers.</div>")


def not_found_page(what: str) -> str:
    return _page("Recommender", f'<h1>Recommender</h1><div class="banner note">{escape(what)}</div>'
                 '<p><a href="./">Back to the overview</a></p>')


def _spans_markers(spans: list[dict[str, Any]]) -> list[Marker]:
    return [Marker(s["from"], f"{'rolled back to' if s['rollback'] else 'published'} {s['model_id']}",
                   s["rollback"]) for s in spans]


def overview_page(data: dict[str, Any], base: str, model_href: str = "models/") -> str:
    """The overview: charts of the chosen days and the table of their models."""
    start, end = dt.date.fromisoformat(data["since"]), dt.date.fromisoformat(data["today"])
    models, serving, stats = data["models"], data["serving"], data["event_stats"]
    markers = _spans_markers(data["publications"])
    k = models[-1]["k"] if models else None
    charts = []
    for metric in ("recall", "ndcg", "coverage"):
        at = f"@{k}" if k else "@k"
        charts.append(line_chart(f"Offline {metric}{at}: each evaluated model against popularity", [
            Series("model", [Point(m["run_date"], m[f"model_{metric}"], m["verdict"] != "pass",
                                   f"{m['model_id']} {m['verdict']}") for m in models]),
            Series("popularity", [Point(m["run_date"], m[f"popularity_{metric}"]) for m in models],
                   dashed=True),
        ], start, end, markers=markers, chart_id=f"chart-{metric}"))
    charts.append(line_chart("Served hit rate on the next day, against the popularity counterfactual", [
        Series("served model", [Point(s["served_date"], s["model_hit_rate"], bool(s["alerts"]),
                                      "; ".join(s["alerts"] or [])) for s in serving]),
        Series("popularity", [Point(s["served_date"], s["popularity_hit_rate"]) for s in serving],
               dashed=True),
    ], start, end, markers=markers, chart_id="chart-serving"))
    charts.append(line_chart("Valid events per day (red: an anomaly rule broke)", [
        Series("events", [Point(s["run_date"], float(s["events"]), s["status"] in ("anomaly", "accepted"),
                                f"{s['status']}: {'; '.join(s['anomalies'] or [])}") for s in stats]),
    ], start, end, chart_id="chart-events"))
    charts.append(line_chart("Drift against the 7 days before (Jensen-Shannon distance)", [
        Series("item popularity", [Point(s["run_date"], s["item_drift"]) for s in stats]),
        Series("event-type mix", [Point(s["run_date"], s["type_drift"]) for s in stats], dashed=True),
    ], start, end, chart_id="chart-drift"))

    choices = " ".join(f'<a href="?days={d}" class="{"on" if d == data["days"] else ""}">{d} days</a>'
                       for d in DAY_CHOICES)
    published = data.get("published_model_id")
    head = (f"<h1>Recommender</h1><p class=muted>{escape(data['since'])} to {escape(data['today'])} (UTC). "
            f"Published now: {_link(model_href + published, published) if published else 'no model'}.</p>"
            f'<p class="days">{choices}</p>')
    hidden = data.get("hidden") or []
    if hidden:
        head += (f'<p class=muted id=hidden>Not shown: the figures of {escape(", ".join(hidden))} '
                 "(you may not read their runs).</p>")
    head += decisions_banner(data.get("decisions") or [], base)
    empty = "" if models or serving or stats else (
        '<div class="banner note" id="empty">Nothing recorded in these days yet: the charts fill in as '
        "recommend_train, recommend_predict and recommend_feedback run.</div>")
    return _page("Recommender", head + empty + "".join(charts) + "<h2>Models</h2>"
                 + models_table(models, base, model_href)
                 + "<h2>Publications</h2>" + publications_table(data["publications"], base, model_href))


def decisions_banner(decisions: list[dict[str, Any]], base: str) -> str:
    """recommend_train's runs waiting for a person's decision, each linked to it in Airflow."""
    if not decisions:
        return ""
    items = "".join(
        f"<li>{escape(d['subject'])} ({escape(d['asked_at'] or '')} UTC): "
        f"{_airflow_link(required_action_url(d['dag_id'], d['run_id'], d['task_id'], base), 'decide')}"
        "</li>" for d in decisions)
    return ('<div class="banner warn" id="decisions"><b>Waiting for a decision</b>: nothing is trained '
            f"on these days until someone approves or rejects them.<ul>{items}</ul></div>")


def _spans_text(spans: list[dict[str, Any]]) -> str:
    return "<br>".join(f"{escape(s['from'][:16])} → {escape(s['to'][:16]) if s['to'] else 'now'}"
                       f"{' (rollback)' if s['rollback'] else ''}" for s in spans) or "–"


def models_table(models: list[dict[str, Any]], base: str, model_href: str) -> str:
    if not models:
        return "<p class=muted>No model evaluated in these days.</p>"
    rows = []
    for m in reversed(models):
        params = json.loads(m["params"]) if m.get("params") else {}
        run = _run_link("recommend_train", m.get("airflow_run_id"), base)
        window = (f"{m['window_start']} – {m['train_end']}" if m.get("window_start") else "–")
        rows.append(
            f'<tr data-model="{escape(m["model_id"])}">'
            f'<td>{_link(model_href + m["model_id"], m["model_id"])}</td>'
            f"<td>{m['run_date']}</td><td>{run}</td><td><code>{_fmt(m.get('image'))}</code></td>"
            f"<td>{escape(', '.join(f'{k}={v}' for k, v in sorted(params.items())))}</td>"
            f"<td>{window}<br>{_fmt(m.get('events_rows_read'))} rows; {_fmt(m.get('train_users'))} × "
            f"{_fmt(m.get('train_items'))}, {_fmt(m.get('train_interactions'))} cells</td>"
            f"<td>{_fmt(m['model_recall'])} / {_fmt(m['popularity_recall'])}</td>"
            f"<td>{_fmt(m['model_ndcg'])} / {_fmt(m['popularity_ndcg'])}</td>"
            f"<td>{_fmt(m['model_coverage'], 3)}</td>"
            f'<td class="{escape(m["verdict"])}">{escape(m["verdict"])}</td>'
            f"<td>{_spans_text(m.get('published', []))}</td></tr>")
    return ("<table id=models><tr><th>model</th><th>run date</th><th>Airflow run</th><th>image</th>"
            "<th>params</th><th>training window, counts</th><th>recall@k model / popularity</th>"
            "<th>ndcg@k model / popularity</th><th>coverage@k</th><th>verdict</th>"
            "<th>published from → to</th></tr>" + "".join(rows) + "</table>")


def publications_table(spans: list[dict[str, Any]], base: str, model_href: str) -> str:
    if not spans:
        return "<p class=muted>No publication in these days.</p>"
    rows = []
    for s in reversed(spans):
        dag = "recommend_rollback" if s["rollback"] else "recommend_train"
        run = _run_link(dag, s.get("airflow_run_id"), base)
        rows.append(f"<tr><td>{_link(model_href + s['model_id'], s['model_id'])}</td>"
                    f"<td>{'rollback' if s['rollback'] else 'promotion'}</td><td>{_spans_text([s])}</td>"
                    f"<td>{_fmt(s.get('previous_model_id'))}</td><td>{run}</td></tr>")
    return ("<table id=publications><tr><th>model</th><th>how</th><th>published from → to</th>"
            "<th>replaced</th><th>Airflow run</th></tr>" + "".join(rows) + "</table>")




def _setting(value: Any) -> str:
    """A setting as the trainer writes it (``0.05``, ``2``, ``log1p``), escaped."""
    if isinstance(value, float):
        return escape(f"{value:g}")
    return _fmt(value)


def _model_ref(model_id: Any) -> str:
    """A link to another model's page (beside this one's), or its id as text when it is not one."""
    text = str(model_id)
    return _link(text, text) if MODEL_ID.fullmatch(text) else f"<code>{escape(text)}</code>"


def tuning_section(m: dict[str, Any]) -> str:
    """Where the model's settings came from, the settings, and its search's trials (the winner's
    row marked by a cell saying so, not by colour alone)."""
    source = m.get("tuning_source")
    if source == "reused":
        origin = (f"reused from the search of {_fmt(m.get('tuned_on'))}, which trained "
                  f"{_model_ref(m.get('tuned_model_id'))}" if m.get("tuned_model_id") else
                  f"reused from the search of {_fmt(m.get('tuned_on'))}")
    elif source:
        origin = escape(TUNING_SOURCES.get(source, source))
    else:
        origin = "not recorded (trained before tuning existed)"
    out = [f'<p id=tuning-source data-source="{escape(str(source or ""))}">Settings: <b>{origin}</b>.</p>']
    if m.get("tuning_note"):
        out.append(f"<p class=muted id=tuning-note>No search ran: {escape(str(m['tuning_note']))}</p>")
    try:
        params = json.loads(m["params"]) if m.get("params") else {}
    except ValueError:
        params = {}
    if isinstance(params, dict) and params:
        params.setdefault("weighting", "raw")  # absent: the raw counts
        out.append("<p id=tuning-settings>Trained with " + ", ".join(
            f"{name} <b>{_setting(params[name])}</b>" for name in SETTINGS if name in params) + ".</p>")
    trials = m.get("trials") or []
    if not trials:
        why = {"reused": "its settings came from an earlier search (see that model's page)",
               "default": "no search ran for it", "params": "no search ran for it"}.get(
            source or "", "no search ran for it, or it was trained before tuning existed")
        out.append(f"<p class=muted id=no-trials>No tuning trials for this model: {escape(why)}.</p>")
        return "".join(out)
    k = _fmt(trials[0].get("k") or m.get("k"))
    rows = []
    for t in trials:
        winner = bool(t.get("winner"))
        rows.append(
            f'<tr{" class=winner" if winner else ""} data-trial="{escape(str(t.get("trial")))}">'
            f"<td>{_fmt(t.get('trial'))}</td><td>{_setting(t.get('factors'))}</td>"
            f"<td>{_setting(t.get('regularization'))}</td><td>{_setting(t.get('alpha'))}</td>"
            f"<td>{_setting(t.get('weighting'))}</td><td>{_fmt(t.get('status'))}</td>"
            f"<td>{_fmt(t.get('rung'))}</td><td>{_fmt(t.get('iterations'))}</td>"
            f"<td>{_fmt(t.get('validation_ndcg'))}</td><td>{_fmt(t.get('validation_recall'))}</td>"
            f"<td>{_fmt(t.get('seconds'), 2)}</td>"
            f"<td>{'<b>winner</b>' if winner else ''}</td>"
            f"<td>{_fmt(t.get('note')) if t.get('note') else ''}</td></tr>")
    out.append(f"<table id=trials><tr><th>trial</th><th>factors</th><th>regularization</th><th>alpha</th>"
               f"<th>weighting</th><th>status</th><th>rung</th><th>iterations</th>"
               f"<th>validation ndcg@{k}</th><th>validation recall@{k}</th><th>seconds</th>"
               f"<th>chosen</th><th>note</th></tr>" + "".join(rows) + "</table>")
    return "".join(out)


def model_page(m: dict[str, Any], base: str, api_base: str) -> str:
    """A model: its lineage, the rollback button (passed, not published now), its tuning and its
    report."""
    verdict = m["verdict"]
    manifest = m.get("manifest") or {}
    window, counts, quality = (manifest.get(k) or {} for k in ("window", "counts", "quality"))
    checks = manifest.get("event_stats") or {}
    steps = {s["task_id"]: s for s in m["lineage"]}

    def step_link(task_id: str) -> str:
        s = steps.get(task_id) or {}
        if not s.get("airflow_run_id"):
            return "<span class=muted>(no record of the step)</span>"
        log_url = task_url(s["dag_id"], s["airflow_run_id"], task_id, base)
        return (f"{_airflow_link(log_url, task_id + ' log')} "
                f"in {_run_link(s['dag_id'], s['airflow_run_id'], base)}"
                f" <span class=muted>({escape(str(s.get('outcome')))}, {_fmt(s.get('seconds'), 1)} s)</span>")

    lineage = [
        f"<li><b>Events window</b> {escape(str(window.get('start', m.get('window_start'))))} – "
        f"{escape(str(window.get('end', '?')))} (training to {escape(str(window.get('train_end', '?')))}, "
        f"holdout {escape(str(window.get('holdout_start')))} – {escape(str(window.get('holdout_end')))}): "
        f"{_fmt(quality.get('rows_read'))} rows read, {_fmt(quality.get('bad_rows'))} bad; data check of "
        f"the run date: <b>{escape(str(checks.get('status', '–')))}</b></li>",
        f"<li><b>Matrices</b> {_fmt(counts.get('users'))} users × {_fmt(counts.get('items'))} items, "
        f"{_fmt(counts.get('train_nnz'))} training and {_fmt(counts.get('holdout_nnz'))} holdout cells: "
        f"{step_link('create_cf_matrices')}</li>",
        f"<li><b>Model</b> <code>{escape(m['model_id'])}</code>, params {escape(m.get('params') or '–')}, "
        f"image <code>{_fmt(m.get('image'))}</code>: {step_link('train')}</li>",
        f'<li><b>Evaluation</b> <span class="{escape(verdict)}">{escape(verdict)}</span> '
        f"({escape(m.get('reasons') or '')}): {step_link('evaluate')}</li>",
    ]
    pubs = m.get("published", [])
    lineage.append("<li><b>Publication</b> " + (("<br>".join(
        f"{_spans_text([s])}: "
        + _run_link("recommend_rollback" if s["rollback"] else "recommend_train", s.get("airflow_run_id"),
                    base) for s in pubs))
        if pubs else "never published") + "</li>")
    served = m.get("served_days", [])
    since = f" since {escape(m['served_since'])}" if m.get("served_since") else ""
    lineage.append(f"<li><b>Served by predict</b>{since} " + (
        "<span class=muted>(you may not read recommend_predict's runs)</span>"
        if "recommend_predict" in m.get("hidden", []) else (", ".join(
        f"{escape(d['run_date'])} ({_fmt(d['users'])} users): "
        + _run_link("recommend_predict", d.get("airflow_run_id"), base,
                    "<span class=muted>run not recorded</span>") for d in served))
        if served else "no day of recommendations from this model") + "</li>")

    if not m.get("may_rollback", True):
        action = "<p class=muted id=no-rollback-permission>You may not trigger recommend_rollback.</p>"
    elif m.get("is_published"):
        action = "<p class=muted>This model is published now.</p>"
    elif verdict != "pass":
        action = ("<p class=muted id=no-rollback>This model failed evaluation: it cannot be published "
                  "(recommend_rollback refuses it).</p>")
    else:
        action = (f'<p><button id="rollback" data-model="{escape(m["model_id"])}" '
                  f'data-api="{escape(api_base)}/api/v2/dags/recommend_rollback/dagRuns" '
                  f'data-dag="{escape(api_base)}/api/v2/dags/recommend_rollback" '
                  f'data-runs="{escape(base)}/dags/recommend_rollback/runs/">'
                  "Roll back to this model</button> "
                  '<span id="rollback-result" class=muted>Triggers recommend_rollback with this model id, '
                  "as you.</span></p>")
    report = (f'<iframe class="report" src="{escape(m["model_id"])}/report" '
              'title="evaluation report"></iframe>'
              if m.get("has_report") else
              "<p class=muted id=no-report>No evaluation report for this model (evaluated before reports "
              "were written).</p>")
    metrics = "".join(
        f"<tr><td>{metric}@{m['k']}</td><td>{_fmt(m[f'model_{metric}'])}</td>"
        f"<td>{_fmt(m[f'popularity_{metric}'])}</td><td>{_fmt(m[f'published_{metric}'])}</td></tr>"
        for metric in ("recall", "ndcg", "coverage"))
    body = (f'<p><a href="../">← Recommender</a></p><h1>{escape(m["model_id"])}</h1>'
            f'<p>run date {escape(m["run_date"])}, evaluated {escape(m["evaluated_at"][:19])} on '
            f'{_fmt(m["eval_users"])} users: <span class="{escape(verdict)}">{escape(verdict)}</span></p>'
            + action + "<h2>Lineage</h2><ol class=lineage>" + "".join(lineage) + "</ol>"
            "<h2>Metrics</h2><table><tr><th></th><th>model</th><th>popularity</th>"
            f"<th>published then ({_fmt(m.get('published_model_id'))})</th></tr>{metrics}</table>"
            "<h2>Tuning</h2>" + tuning_section(m) + "<h2>Evaluation report</h2>" + report)
    return _page(m["model_id"], body)
