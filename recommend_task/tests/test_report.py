"""What ``trainer.report`` (``make demo``'s last output) prints to a terminal: never a raw
control character from the tables it reads, whatever their rows hold."""

from __future__ import annotations

import datetime as dt
import importlib
import re

from trainer_support.helpers import RUN_DATE

from trainer.storage import tables

# Terminal escapes (colour, cursor up, erase line, an OSC 8 hyperlink, the title), a bell, a
# backspace, a carriage return, a NUL, DEL and a C1 control (CSI): each could rewrite or hide
# what the report shows.
HOSTILE = ("\x1b[31mred\x1b[0m", "up\x1b[1A\x1b[2Kgone", "\x1b]8;;https://example.invalid\x07link\x1b]8;;\x07",
           "title\x1b]0;pwned\x07", "bs\x08\x08ok", "cr\rover", "nul\x00x", "del\x7fx", "c1\x9b31m")
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # every control character but the newline


def _insert(client, table: str, rows: list[dict]) -> None:
    errors = client.insert_rows_json(table, rows)
    assert not errors, errors


def test_the_report_prints_no_control_character_from_ids_anomalies_or_alerts(
        bq_client, project, dataset, capsys):
    tables.ensure_all(bq_client, project, dataset, "US")
    tid = lambda name: tables.table_id(project, dataset, name)  # noqa: E731
    now = dt.datetime(2026, 11, 30, 3, tzinfo=dt.UTC).isoformat()
    model_id = "als-\x1b[2J" + HOSTILE[0]
    metrics = {f"{rec}_{m}": 0.5 for rec in ("model", "popularity") for m in tables.METRIC_NAMES}
    _insert(bq_client, tid(tables.MODEL_METRICS), [{
        "model_id": model_id, "run_date": str(RUN_DATE), "evaluated_at": now, "model_uri": "gs://b/m",
        "k": 10, "eval_users": 5, **metrics, "primary_metric": "recall", "verdict": "pass\x1b[8m",
        "reasons": "because " + HOSTILE[1]}])
    _insert(bq_client, tid(tables.EVENT_STATS), [{
        "run_date": str(RUN_DATE), "computed_at": now, "status": "anomaly", "accepted": False,
        "anomalies": [f"user '{h}' made 50 % of the day's events (limit 10 %)" for h in HOSTILE],
        "events": 10, "events_by_type": [{"event_type": "view\x1b[5m", "events": 10}],
        "trailing_days": 0, "active_users": 1, "active_items": 1, "rows_read": 10,
        "bad_rows": [{"reason": "x\x1b[3m", "rows": 0}]}])
    _insert(bq_client, tid(tables.RECOMMENDATIONS), [
        {"run_date": str(RUN_DATE), "user_id": user, "rank": rank, "item_id": f"item{rank}{item}",
         "score": 1.0 / rank, "model_id": model_id, "generated_at": now}
        for user in HOSTILE[:3] for rank, item in enumerate(HOSTILE[3:], start=1)])
    _insert(bq_client, tid(tables.SERVING_METRICS), [{
        "served_date": str(RUN_DATE), "run_date": str(RUN_DATE + dt.timedelta(days=1)), "computed_at": now,
        "model_id": model_id, "k": 10, "users_served": 3, "users_returning": 1, "users_active": 1,
        "alerts": [f"served model {model_id} did worse {h}" for h in HOSTILE], "lookback_days": 30}])

    from trainer.step import cli

    report = importlib.import_module("trainer.report")
    capsys.readouterr()
    rc = cli.run_step("report", report.main, report.build_parser(),
                      ["--project", project, "--dataset", dataset, "--run-date", str(RUN_DATE),
                       "--users", "3"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    raw = sorted({hex(ord(c)) for c in CONTROL.findall(out + err)})
    assert raw == [], f"raw control characters printed: {raw}"
    # Escaped, not dropped: each id is still recognisable, in Python's escape notation.
    for shown in (r"\x1b[31mred\x1b[0m", r"cr\rover", r"nul\x00x", r"del\x7fx", r"c1\x9b31m",
                  r"als-\x1b[2J", r"view\x1b[5m"):
        assert shown in out, (shown, out)
