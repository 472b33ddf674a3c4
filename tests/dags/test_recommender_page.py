"""The Recommender page (plugins/recommender_plugin.py) in Airflow's own API server app, with
Airflow's auth manager, over a history that real trainer steps wrote to the emulators
(page_history.py): its data against the tables, its lineage links, the report, the extra link,
and the page with empty tables and with BigQuery down. Runs on both ends of the supported range.
The browser test (tests/local/test_browser.py) drives the same page, and its rollback button,
in the UI of a `make up` stack."""

from __future__ import annotations

import datetime as dt
import os
import re
import types
from html.parser import HTMLParser

import pytest
from conftest import AIRFLOW_BASE_URL
from support.page_history import IMAGE, predict_day, run_id, seed, step, train_day

BASE = AIRFLOW_BASE_URL.rstrip("/")
ROOT = "/" + BASE.split("/", 3)[3]  # the path Airflow is served under ([api] base_url)
TODAY = dt.datetime.now(dt.UTC).date()
DAY = TODAY - dt.timedelta(days=2)  # served on DAY + 1, measured on DAY + 1's events
OLDER, FAILED = DAY - dt.timedelta(days=1), DAY - dt.timedelta(days=2)


def _bq():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(project=os.environ["RECSYS_GCP_PROJECT"], credentials=AnonymousCredentials(),
                           client_options={"api_endpoint": os.environ["BIGQUERY_EMULATOR_HOST"]})


def _rows(sql: str) -> list[dict]:
    return [dict(r.items()) for r in _bq().query(sql).result()]


def _gcs_blob(path: str):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    gcs = storage.Client(project="test-project", credentials=AnonymousCredentials(),
                         client_options={"api_endpoint": os.environ["STORAGE_EMULATOR_HOST"]})
    return gcs.bucket("recsys-test").blob(f"page/{path}")


@pytest.fixture(scope="module")
def history(emulators, airflow_db):
    """A failed model, two published ones (the newer over the older, whose settings a tuning
    search chose), a served day and its hit rate, in a dataset and artifacts folder of this
    module's own."""
    saved = {k: os.environ[k] for k in ("RECSYS_BQ_DATASET", "RECSYS_ARTIFACTS_URI")}
    os.environ.update(RECSYS_BQ_DATASET="recsys_page", RECSYS_ARTIFACTS_URI="gs://recsys-test/page")
    seed(DAY + dt.timedelta(days=1), days=14)
    train_day(FAILED, "--min-lift", "100", promote=False)
    train_day(OLDER, tune="always")  # its settings from a search: the trials its page lists
    train_day(DAY, "--max-regression", "0.5")  # the gate is not what is tested here
    predict_day(DAY)
    step("feedback_task", "recommend_feedback", "feedback", DAY + dt.timedelta(days=1),
         "--lookback-days", "12", "--alert-min-users", "1")
    models = {r["run_date"]: r for r in _rows(
        f"SELECT * FROM `{os.environ['RECSYS_GCP_PROJECT']}.recsys_page.model_metrics`")}
    yield {"models": models}
    os.environ.update(saved)


@pytest.fixture(scope="module")
def api(history):
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient
    from recommender import app as page_app

    page_app.store.cache_clear()  # the module's dataset
    with TestClient(create_app("core"), base_url=BASE) as client:
        yield client


def _token(role: str | None) -> dict[str, str]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    jwt = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="u", role=role))
    return {"Authorization": f"Bearer {jwt}"}


ADMIN = None


def _get(api, path: str, **kwargs):
    global ADMIN
    ADMIN = ADMIN or _token("ADMIN")
    return api.get(f"/recommender{path}", headers=ADMIN, follow_redirects=False, **kwargs)


class _Points(HTMLParser):
    """The drawn points (circles) of each chart, and every link, of a page."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.points: dict[str, list[dict]] = {}
        self.links: list[str] = []
        self.ids: set[str] = set()
        self._chart = ""
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "svg":
            self._chart = a.get("id", "")
        elif tag == "circle":
            self.points.setdefault(self._chart, []).append(a)
        elif tag == "a":
            self.links.append(a.get("href", ""))


def test_every_route_refuses_a_request_without_sign_in_or_permission(history, api):
    model = history["models"][DAY]["model_id"]
    routes = ["/", "/?days=90", "/api/overview", f"/models/{model}", f"/api/models/{model}",
              f"/models/{model}/report", f"/runs/{run_id('recommend_train', DAY)}/report"]
    no_role = _token(None)
    for route in routes:
        url = f"/recommender{route}"
        assert api.get(url).status_code == 401, route
        assert api.get(url, headers={"Authorization": "Bearer not-a-token"}).status_code in (401, 403), route
        assert api.get(url, headers=no_role).status_code == 403, route
        assert _get(api, route).status_code in (200, 307), route


def test_the_overview_charts_every_model_serving_day_and_data_check_as_the_tables_hold_them(history, api):
    data = _get(api, "/api/overview?days=30").json()
    models = history["models"]
    assert [m["model_id"] for m in data["models"]] == [models[d]["model_id"] for d in (FAILED, OLDER, DAY)]
    assert [m["model_recall"] for m in data["models"]] == [
        models[d]["model_recall"] for d in (FAILED, OLDER, DAY)]
    assert data["published_model_id"] == models[DAY]["model_id"]
    spans = [(s["model_id"], s["to"] is None, s["rollback"]) for s in data["publications"]]
    assert spans == [(models[OLDER]["model_id"], False, False), (models[DAY]["model_id"], True, False)]
    [served] = data["serving"]
    assert (served["served_date"], served["model_id"]) == (DAY.isoformat(), models[DAY]["model_id"])
    assert {s["run_date"] for s in data["event_stats"]} == {d.isoformat() for d in (FAILED, OLDER, DAY)}

    page = _get(api, "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    drawn = _Points(page.text)
    recall = [p for p in drawn.points["chart-recall"] if p["data-series"] == "model"]
    assert [(p["data-day"], float(p["data-value"])) for p in recall] == [
        (d.isoformat(), models[d]["model_recall"]) for d in (FAILED, OLDER, DAY)]
    assert [p.get("data-marked") for p in recall] == ["true", None, None]  # the failed verdict
    popularity = [float(p["data-value"]) for p in drawn.points["chart-recall"]
                  if p["data-series"] == "popularity"]
    assert popularity == [models[d]["popularity_recall"] for d in (FAILED, OLDER, DAY)]
    hit = [p for p in drawn.points["chart-serving"] if p["data-series"] == "served model"]
    assert [(p["data-day"], float(p["data-value"])) for p in hit] == [
        (DAY.isoformat(), served["model_hit_rate"])]
    assert len(drawn.points["chart-events"]) == 3
    # The model table: each model links to its page and to the run that produced it.
    for d in (FAILED, OLDER, DAY):
        assert f"models/{models[d]['model_id']}" in drawn.links
        assert f"{BASE}/dags/recommend_train/runs/{_quoted(run_id('recommend_train', d))}" in drawn.links
    assert IMAGE in page.text
    assert len(_get(api, "/api/overview?days=366").json()["models"]) == 3
    assert _get(api, "/api/overview?days=0").status_code == 422


def _quoted(run: str) -> str:
    import urllib.parse

    return urllib.parse.quote(run, safe="")


def test_a_model_page_shows_its_lineage_as_links_and_rollback_only_where_it_can_work(history, api):
    models = history["models"]
    older = _get(api, f"/models/{models[OLDER]['model_id']}")
    assert older.status_code == 200
    links = _Points(older.text)
    train_run = f"{BASE}/dags/recommend_train/runs/{_quoted(run_id('recommend_train', OLDER))}"
    for task in ("create_cf_matrices", "train", "evaluate"):
        assert f"{train_run}/tasks/{task}" in links.links, task
    assert train_run in links.links
    assert "rollback" in links.ids and "never published" not in older.text  # passed, replaced since
    assert f'data-model="{models[OLDER]["model_id"]}"' in older.text
    assert f'data-api="{ROOT}/api/v2/dags/recommend_rollback/dagRuns"' in older.text

    current = _get(api, f"/models/{models[DAY]['model_id']}")
    assert "rollback" not in _Points(current.text).ids and "published now" in current.text
    predict_run = f"{BASE}/dags/recommend_predict/runs/{_quoted(run_id('recommend_predict', DAY))}"
    assert predict_run in _Points(current.text).links  # the predict run that served it
    failed = _get(api, f"/models/{models[FAILED]['model_id']}")
    assert "rollback" not in _Points(failed.text).ids and "no-rollback" in _Points(failed.text).ids
    assert "never published" in failed.text
    detail = _get(api, f"/api/models/{models[DAY]['model_id']}").json()
    assert [d["run_date"] for d in detail["served_days"]] == [DAY.isoformat()]
    assert detail["manifest"]["counts"]["users"] == models[DAY]["train_users"]

    assert _get(api, "/models/als-20000101-0000000000").status_code == 404
    assert _get(api, "/models/not-a-model").status_code == 404


def test_the_report_is_served_as_written_the_extra_link_finds_it_and_a_missing_one_is_said(history, api):
    from operators.ui_links import EvaluationReportLink

    model = history["models"][OLDER]["model_id"]
    report = _get(api, f"/models/{model}/report")
    written = _gcs_blob(f"models/{model}/report.html").download_as_bytes()
    assert report.status_code == 200 and report.content == written
    assert report.headers["content-security-policy"].startswith("sandbox; default-src 'none'")

    ti_key = types.SimpleNamespace(run_id=run_id("recommend_train", OLDER))
    link = EvaluationReportLink().get_link(None, ti_key=ti_key)
    assert link.startswith(f"{BASE}/recommender/runs/")
    redirect = _get(api, link.removeprefix(BASE).removeprefix("/recommender"))
    assert redirect.status_code == 307 and redirect.headers["location"].endswith(f"/models/{model}/report")
    assert _get(api, "/runs/manual__never/report").status_code == 404

    blob = _gcs_blob(f"models/{model}/report.html")
    blob.delete()  # an older model, evaluated before reports existed
    try:
        assert _get(api, f"/models/{model}/report").status_code == 404
        page = _get(api, f"/models/{model}")
        assert page.status_code == 200 and "no-report" in _Points(page.text).ids
    finally:
        _gcs_blob(f"models/{model}/report.html").upload_from_string(written, content_type="text/html")


def test_a_fresh_install_shows_empty_charts_and_bigquery_down_a_clear_message(
        history, api, monkeypatch, unavailable_bigquery):
    from recommender import app as page_app

    monkeypatch.setenv("RECSYS_BQ_DATASET", "recsys_page_empty")  # no table at all
    page_app.store.cache_clear()
    try:
        empty = _get(api, "/")
        assert empty.status_code == 200 and "empty" in _Points(empty.text).ids
        assert _Points(empty.text).points == {}
        assert _get(api, "/api/overview").json()["models"] == []

        monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", unavailable_bigquery)
        page_app.store.cache_clear()
        down = _get(api, "/")
        assert down.status_code == 503 and "unavailable" in _Points(down.text).ids
        assert "BigQuery did not answer" in down.text and "Traceback" not in down.text
        [line] = [ln for ln in re.findall(r"BigQuery did not answer[^<]*", down.text)]
        assert len(line) < 400
        detail = _get(api, "/api/overview").json()["detail"]
        assert detail.startswith("BigQuery did not answer") and "\n" not in detail
    finally:
        monkeypatch.undo()
        page_app.store.cache_clear()


def test_the_plugin_adds_the_page_to_the_navigation_and_the_dag_pages(api):
    views = {(v["destination"], v["href"]) for p in _get_plugins(api) for v in p["external_views"]}
    assert ("nav", f"{ROOT}/recommender/") in views and ("dag", f"{ROOT}/recommender/") in views


def _get_plugins(api) -> list[dict]:
    global ADMIN
    ADMIN = ADMIN or _token("ADMIN")
    body = api.get("/api/v2/plugins", headers=ADMIN).json()
    return [p for p in body["plugins"] if p["name"] == "recommender_plugin"]




# --- issue 39: the pages' policy, a view's BigQuery cost, per-DAG permissions ------------------

def _policy(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        if words := part.split():
            directives[words[0].lower()] = words[1:]
    return directives


class _Inline(HTMLParser):
    """What a page loads and what it carries inline: scripts, styles, handlers."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.sheets: list[str] = []
        self.inline: list[str] = []
        self._in_script = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name in a:
            if name == "style" or name.startswith("on"):
                self.inline.append(f"<{tag} {name}>")
        if tag == "script":
            self._in_script = "src" not in a
            if "src" in a:
                self.scripts.append(a["src"])
        elif tag == "style":
            self.inline.append("<style>")
        elif tag == "link" and a.get("rel") == "stylesheet":
            self.sheets.append(a["href"])

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline.append(f"<script>{data.strip()[:40]}")


def test_every_page_has_a_strict_policy_loads_only_the_apps_static_files_and_nothing_inline(history, api):
    models = history["models"]
    pages = ["/", "/?days=90", f"/models/{models[OLDER]['model_id']}", f"/models/{models[DAY]['model_id']}",
             f"/models/{models[FAILED]['model_id']}", "/models/als-20000101-0000000000"]
    for path in pages:
        page = _get(api, path)
        assert page.status_code in (200, 404), path
        policy = _policy(page.headers.get("content-security-policy", ""))
        assert policy.get("default-src") == ["'self'"], (path, policy)
        for kind in ("script-src", "style-src"):
            allowed = policy.get(kind, policy.get("default-src"))
            assert all(s == "'self'" or s.startswith("'nonce-") for s in allowed), (path, kind, allowed)
        assert policy.get("frame-ancestors") == ["'self'"], (path, policy)
        found = _Inline(page.text)
        assert found.inline == [], (path, found.inline)
        assert found.scripts and found.sheets, path
        for url in found.scripts + found.sheets:
            assert url.startswith(f"{ROOT}/recommender/static/"), (path, url)
            static = api.get(url.removeprefix(ROOT), headers=ADMIN)  # the client's base has ROOT
            assert static.status_code == 200, url
            assert static.headers["content-type"].startswith(("text/javascript", "text/css")), url
            assert "innerHTML" not in static.text, url  # data reaches the page as text only

    report = _get(api, f"/models/{models[OLDER]['model_id']}/report")
    policy = _policy(report.headers["content-security-policy"])
    assert policy.get("sandbox") == [] and policy.get("frame-ancestors") == ["'self'"], policy
    assert policy.get("default-src") == ["'none'"] and "script-src" not in policy, policy


def _job_of(sql: str):
    """The emulator's job that ran ``sql`` (the newest)."""
    jobs = [j for j in _bq().list_jobs(max_results=200) if getattr(j, "query", None) == sql]
    assert jobs, f"no job ran {sql!r}"
    return _bq().get_job(jobs[0].job_id)


def test_a_query_past_the_pages_deadline_is_cancelled_not_left_running(history, monkeypatch):
    from recommender import store as page_store

    from operators import config as recsys_config

    # Billions of rows: seconds of DuckDB work, far past the deadline.
    slow = ("SELECT SUM(x * y) AS s FROM UNNEST(GENERATE_ARRAY(1, 300000)) AS x "
            "CROSS JOIN UNNEST(GENERATE_ARRAY(1, 300000)) AS y")
    monkeypatch.setattr(page_store, "DEADLINE_S", 1.0)
    reads = page_store.RecommenderStore(recsys_config.load())
    with pytest.raises(page_store.Unavailable) as refused:
        reads.query(slow)
    assert "\n" not in str(refused.value)
    job = _job_of(slow)
    assert job.state == "DONE", job.state  # cancelled, not still running for no one
    assert job.error_result and job.error_result["reason"] == "stopped", job.error_result


def test_a_model_page_reads_only_the_partitions_of_the_days_it_shows(history, monkeypatch):
    from recommender import store as page_store

    from operators import config as recsys_config

    model = history["models"][DAY]["model_id"]
    reads = page_store.RecommenderStore(recsys_config.load())
    ran: list[tuple[str, dict]] = []
    query = reads.query
    monkeypatch.setattr(reads, "query", lambda sql, params=None: ran.append((sql, params or {}))
                        or query(sql, params))

    shown = reads.model(model, days=30, today=DAY + dt.timedelta(days=1))
    assert [d["run_date"] for d in shown["served_days"]] == [DAY.isoformat()]
    late = reads.model(model, days=30, today=DAY + dt.timedelta(days=200))
    assert late["served_days"] == []  # served, but before the days shown
    for sql, params in ran:
        if ".recommendations`" in sql:
            assert "run_date BETWEEN @first AND @last" in sql and "user_id" not in sql, sql
            assert (params["last"] - params["first"]).days < 30, params
        if ".model_metrics`" in sql or ".tuning_trials`" in sql:
            assert "run_date = @run_date" in sql, sql  # the model's own partition
    assert sum(".tuning_trials`" in sql for sql, _ in ran) == 2  # once a view
    recs = [p for sql, p in ran if ".recommendations`" in sql]
    assert [p["first"] for p in recs] == [DAY, DAY + dt.timedelta(days=171)]


@pytest.fixture
def dag_scoped_api(history):
    """Airflow's app with an auth manager that knows DAG ids (tests/dags/support/dag_scoped_auth.py)."""
    from airflow.api_fastapi import app as airflow_app
    from fastapi.testclient import TestClient
    from recommender import app as page_app

    saved = os.environ.get("AIRFLOW__CORE__AUTH_MANAGER")
    os.environ["AIRFLOW__CORE__AUTH_MANAGER"] = "support.dag_scoped_auth.DagScopedAuthManager"
    airflow_app.purge_cached_app()
    page_app.store.cache_clear()
    try:
        with TestClient(airflow_app.create_app("core"), base_url=BASE) as client:
            assert type(airflow_app.get_auth_manager()).__name__ == "DagScopedAuthManager"
            yield client
    finally:
        if saved is None:
            os.environ.pop("AIRFLOW__CORE__AUTH_MANAGER")
        else:
            os.environ["AIRFLOW__CORE__AUTH_MANAGER"] = saved
        airflow_app.purge_cached_app()
        airflow_app.create_app("core")  # the module's app: SimpleAuthManager again
        page_app.store.cache_clear()


def _user(name: str, role: str) -> dict[str, str]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    jwt = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=name, role=role))
    return {"Authorization": f"Bearer {jwt}"}


def _table(name: str) -> str:
    return f"`{os.environ['RECSYS_GCP_PROJECT']}.recsys_page.{name}`"


def test_a_user_who_may_read_recommend_train_only_sees_no_other_dags_runs_or_figures(history, dag_scoped_api):
    api, models = dag_scoped_api, history["models"]
    train_only, admin = _user("train-only", "ADMIN"), _user("admin", "ADMIN")
    # The auth manager is what the test says: it refuses this user every DAG but recommend_train.
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    who = SimpleAuthManagerUser(username="train-only", role="ADMIN")
    assert {dag: get_auth_manager().is_authorized_dag(method="GET", access_entity=DagAccessEntity.RUN,
                                                      details=DagDetails(id=dag), user=who)
            for dag in ("recommend_train", "recommend_predict", "recommend_feedback", "recommend_rollback")
            } == {"recommend_train": True, "recommend_predict": False, "recommend_feedback": False,
                  "recommend_rollback": False}

    # A rollback publication, so that there is a rollback run to hide.
    rollback_run = "manual__rollback-for-the-permission-test"
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    _bq().query(f"INSERT INTO {_table('publications')} (published_date, published_at, model_id, "
                "model_run_date, previous_model_id, is_rollback, airflow_run_id) VALUES "
                f"(DATE '{now.date()}', TIMESTAMP '{now.isoformat()}', '{models[OLDER]['model_id']}', "
                f"DATE '{OLDER}', '{models[DAY]['model_id']}', TRUE, '{rollback_run}')").result()
    try:
        seen = api.get("/recommender/api/overview?days=30", headers=admin).json()
        assert seen["serving"] and any(s["airflow_run_id"] == rollback_run for s in seen["publications"])
        data = api.get("/recommender/api/overview?days=30", headers=train_only)
        assert data.status_code == 200
        data = data.json()
        assert [m["model_id"] for m in data["models"]] == [
            models[d]["model_id"] for d in (FAILED, OLDER, DAY)]
        assert data["serving"] == []  # recommend_feedback's figures
        assert not any(s["rollback"] for s in data["publications"]), data["publications"]
        assert rollback_run not in str(data)
        page = api.get("/recommender/", headers=train_only).text
        assert "chart-serving" in page and "chart-serving" not in _Points(page).points
        for dag in ("recommend_predict", "recommend_feedback", "recommend_rollback"):
            assert f"/dags/{dag}/" not in page, dag
        assert rollback_run not in page

        served = api.get(f"/recommender/api/models/{models[DAY]['model_id']}", headers=admin).json()
        assert served["served_days"]
        detail = api.get(f"/recommender/api/models/{models[DAY]['model_id']}", headers=train_only).json()
        assert detail["served_days"] == []  # recommend_predict's runs
        for model in (models[DAY], models[OLDER]):
            page = api.get(f"/recommender/models/{model['model_id']}", headers=train_only).text
            for dag in ("recommend_predict", "recommend_rollback"):
                assert f"/dags/{dag}/" not in page, (model["model_id"], dag)
            assert 'id="rollback"' not in page  # may not trigger recommend_rollback
        older = f"/recommender/models/{models[OLDER]['model_id']}"
        assert 'id="rollback"' in api.get(older, headers=admin).text
    finally:
        _bq().query(f"DELETE FROM {_table('publications')} WHERE airflow_run_id = '{rollback_run}'").result()


@pytest.mark.parametrize("named_by", ["GOOGLE_APPLICATION_CREDENTIALS", "the connection's key_path"])
def test_a_missing_credentials_file_is_a_503_that_never_names_its_path(named_by, history, api, monkeypatch,
                                                                     tmp_path, caplog, capfd):
    """A service-account key file that is not there (a secret's mount gone), named by the
    environment or by the Google connection's ``key_path``: the page and its data endpoint answer
    503 with a one-line reason, and neither they nor any log line name the file's path or name
    (the secrets test treats both as secret). The connection is a real project's, not the
    emulators' anonymous one, so the hook does look for the file."""
    import json

    from recommender import app as page_app

    missing = tmp_path / "keys" / "recsys-sa-5ec7e7.json"
    extra = {"project": os.environ["RECSYS_GCP_PROJECT"]}
    if named_by == "GOOGLE_APPLICATION_CREDENTIALS":
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(missing))
    else:
        extra["key_path"] = str(missing)
    monkeypatch.setenv("RECSYS_GCP_CONN_ID", "recsys_page_real")
    monkeypatch.setenv("AIRFLOW_CONN_RECSYS_PAGE_REAL",
                       json.dumps({"conn_type": "google_cloud_platform", "extra": extra}))
    page_app.store.cache_clear()
    capfd.readouterr()
    try:
        # At the API server's log level (INFO): google.auth itself names the file it checks at
        # DEBUG, which a server does not log.
        with caplog.at_level("INFO"):
            page, detail = _get(api, "/"), _get(api, "/api/overview")
    finally:
        monkeypatch.undo()
        page_app.store.cache_clear()
    assert (page.status_code, detail.status_code) == (503, 503), page.text[-2000:]
    assert "unavailable" in _Points(page.text).ids and "Traceback" not in page.text
    assert "credentials" in detail.json()["detail"].lower(), detail.json()  # still says what is wrong
    logs = capfd.readouterr()
    shown = {"page": page.text, "data endpoint": detail.text, "log records": caplog.text,
             "process output": logs.out + logs.err}
    for where, text in shown.items():
        for part in (str(missing), missing.name, str(missing.parent)):
            assert part not in text, f"{part} appears in the {where}"


# --- the tuning search on the model page ---------------------------------------------------------

class _Trials(HTMLParser):
    """The rows of a page's trials table (each row's attributes and cell texts), and its ids."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.header: list[str] = []
        self.rows: list[tuple[dict, list[str]]] = []
        self.ids: dict[str, str] = {}
        self._table = False
        self._cells: list[str] | None = None
        self._id: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self._id = a["id"]
            self.ids[self._id] = ""
        if tag == "table":
            self._table = a.get("id") == "trials"
        elif tag == "tr" and self._table:
            self._cells = []
            self.rows.append((a, self._cells))
        elif tag in ("td", "th") and self._cells is not None:
            self._cells.append("")

    def handle_endtag(self, tag):
        if tag == "table":
            self._table, self._cells = False, None
        elif tag == "p":
            self._id = None

    def handle_data(self, data):
        if self._cells is not None and self._cells:
            self._cells[-1] += data
        if self._id:
            self.ids[self._id] += data

    def table(self) -> list[dict[str, str]]:
        """Each trial row as {header: cell text}, with its row's class as ``class``."""
        (_, header), *rows = self.rows
        return [{**dict(zip(header, cells, strict=True)), "class": a.get("class", "")} for a, cells in rows]


def _trials_of(model_id: str) -> list[dict]:
    return _rows(f"SELECT * FROM {_table('tuning_trials')} WHERE model_id = '{model_id}' ORDER BY trial")


def test_a_model_page_lists_its_searchs_trials_with_the_winner_marked_and_says_where_settings_came_from(
        history, api):
    models = history["models"]
    tuned = models[OLDER]
    assert tuned["tuning_source"] == "search" and tuned["tuned_on"] == OLDER
    trials = _trials_of(tuned["model_id"])
    assert len(trials) > 1 and sum(t["winner"] for t in trials) == 1, trials
    [winner] = [t["trial"] for t in trials if t["winner"]]

    page = _get(api, f"/models/{tuned['model_id']}")
    assert page.status_code == 200
    found = _Trials(page.text)
    assert "searched by this model's run" in found.ids["tuning-source"], found.ids
    assert "no-trials" not in found.ids
    settings = found.ids["tuning-settings"]
    for name in ("factors", "regularization", "alpha", "weighting", "iterations"):
        assert name in settings, settings
    assert "factors 8," in settings  # the run's own param fixes it through the search
    table = found.table()
    assert [int(r["trial"]) for r in table] == [t["trial"] for t in trials]
    assert [r["status"] for r in table] == [t["status"] for t in trials]
    assert [r["weighting"] for r in table] == [t["weighting"] for t in trials]
    assert [float(r["validation ndcg@10"]) for r in table if r["status"] == "ok"] == pytest.approx(
        [t["validation_ndcg"] for t in trials if t["status"] == "ok"], abs=1e-4)
    # The winner says so in a cell of its own (and its row is styled), never by colour alone.
    assert [r["chosen"] for r in table] == ["winner" if t["trial"] == winner else "" for t in trials]
    assert [r["class"] for r in table] == ["winner" if t["trial"] == winner else "" for t in trials]

    detail = _get(api, f"/api/models/{tuned['model_id']}").json()
    assert detail["tuning_source"] == "search" and detail["tuned_on"] == OLDER.isoformat()
    assert [(t["trial"], t["winner"], t["status"]) for t in detail["trials"]] == [
        (t["trial"], t["winner"], t["status"]) for t in trials]

    # A model trained with its run's params and no search: one line says there are no trials.
    failed = models[FAILED]
    assert failed["tuning_source"] == "params" and _trials_of(failed["model_id"]) == []
    page = _get(api, f"/models/{failed['model_id']}")
    found = _Trials(page.text)
    assert "set by the run's params" in found.ids["tuning-source"]
    assert "No tuning trials for this model" in found.ids["no-trials"] and found.rows == []
    assert _get(api, f"/api/models/{failed['model_id']}").json()["trials"] == []


HOSTILE_MODEL = "als-20010203-00000000ab"  # a run date no overview's days reach
HOSTILE_TEXT = "<script>alert(1)</script> <!here>"


def test_hostile_tuning_values_are_shown_as_text_on_the_model_page(history, api):
    """A model whose tuning columns and trial values are markup: the page shows them as text,
    and links the model its settings came from only when that is a model id."""
    from google.cloud import bigquery

    def run(sql: str, **params) -> None:
        types = {str: "STRING", int: "INT64", float: "FLOAT64", bool: "BOOL", dt.date: "DATE"}
        config = bigquery.QueryJobConfig(query_parameters=[
            bigquery.ScalarQueryParameter(k, types[type(v)], v) for k, v in params.items()])
        _bq().query(sql, job_config=config).result()

    day = dt.date(2001, 2, 3)
    run(f"INSERT INTO {_table('model_metrics')} (model_id, run_date, evaluated_at, model_uri, k, "
        "eval_users, primary_metric, verdict, reasons, params, tuning_source, tuned_on, tuned_model_id, "
        "tuning_note) VALUES (@id, @day, CURRENT_TIMESTAMP(), @uri, 10, 5, 'recall', 'fail', @text, "
        "@params, 'reused', @day, @text, @text)", id=HOSTILE_MODEL, day=day, uri=f"gs://recsys-test/page/models/{HOSTILE_MODEL}",
        text=HOSTILE_TEXT, params='{"factors": 8, "weighting": "<b>log1p</b>"}')
    for trial, winner in ((0, False), (1, True)):
        run(f"INSERT INTO {_table('tuning_trials')} (run_date, model_id, trial, factors, regularization, "
            "alpha, weighting, status, rung, iterations, k, validation_ndcg, validation_recall, seconds, "
            "winner, note, seed, loaded_at) VALUES (@day, @id, @trial, 8, 0.05, 2.0, @text, @text, 0, 4, 10, "
            "0.1, 0.2, 0.5, @winner, @text, 42, CURRENT_TIMESTAMP())",
            day=day, id=HOSTILE_MODEL, trial=trial, winner=winner, text=HOSTILE_TEXT)
    try:
        page = _get(api, f"/models/{HOSTILE_MODEL}")
        assert page.status_code == 200, page.text[-2000:]
        assert "<script>alert" not in page.text and "<!here>" not in page.text
        assert "<b>log1p</b>" not in page.text
        escaped = "&lt;script&gt;alert(1)&lt;/script&gt; &lt;!here&gt;"
        assert page.text.count(escaped) >= 2 * 3 + 2, page.text  # each trial's 3 cells, the note, the id
        found = _Trials(page.text)
        assert HOSTILE_TEXT in found.ids["tuning-note"] and HOSTILE_TEXT in found.ids["tuning-source"]
        assert [r["note"] for r in found.table()] == [HOSTILE_TEXT, HOSTILE_TEXT]
        assert [r["chosen"] for r in found.table()] == ["", "winner"]
        assert not any("script" in link for link in _Points(page.text).links)  # no link made of it
        assert _Inline(page.text).inline == []
        detail = _get(api, f"/api/models/{HOSTILE_MODEL}").json()
        assert [t["note"] for t in detail["trials"]] == [HOSTILE_TEXT, HOSTILE_TEXT]
    finally:
        for table in ("model_metrics", "tuning_trials"):
            run(f"DELETE FROM {_table(table)} WHERE run_date = @day AND model_id = @id", day=day,
                id=HOSTILE_MODEL)


def test_a_model_metrics_table_of_the_previous_release_still_shows_its_models(history, monkeypatch):
    """The page deployed before the trainer image that adds model_metrics' tuning columns: the
    overview and a model page show the models, the columns they lack as empty, not a 503."""
    from google.cloud import bigquery
    from recommender import store as page_store

    from operators import config as recsys_config

    dataset = "recsys_page_previous"
    client = page_store.RecommenderStore(recsys_config.load()).bigquery()
    client.create_dataset(f"test-project.{dataset}", exists_ok=True)
    missing = {"tuning_source", "tuned_on", "tuned_model_id", "tuning_note"}
    source = client.get_table("test-project.recsys_page.model_metrics")
    old = bigquery.Table(f"test-project.{dataset}.model_metrics",
                         schema=[f for f in source.schema if f.name not in missing])
    client.delete_table(old, not_found_ok=True)
    client.create_table(old)
    model = history["models"][DAY]["model_id"]
    columns = ", ".join(f.name for f in old.schema)
    client.query(f"INSERT INTO `test-project.{dataset}.model_metrics` ({columns}) SELECT {columns} "
                 "FROM `test-project.recsys_page.model_metrics` WHERE model_id = @id",
                 job_config=bigquery.QueryJobConfig(query_parameters=[
                     bigquery.ScalarQueryParameter("id", "STRING", model)])).result()
    monkeypatch.setenv("RECSYS_BQ_DATASET", dataset)
    reads = page_store.RecommenderStore(recsys_config.load())
    overview = reads.overview(days=400, today=DAY + dt.timedelta(days=1))
    assert [m["model_id"] for m in overview["models"]] == [model]
    shown = reads.model(model, days=30, today=DAY + dt.timedelta(days=1))
    assert shown["model_id"] == model and {shown[c] for c in missing} == {None} and shown["trials"] == []
