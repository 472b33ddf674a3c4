"""The Recommender page's FastAPI app, mounted by recommender_plugin under ``/recommender`` in
Airflow's API server.

Airflow does not apply its authentication to a plugin's app by itself: the app depends, for
every route, on Airflow's own ``requires_access_dag`` (GET on recommend_train's runs), which
reads the signed-in user's token (the UI's cookie, or a bearer token). Without one, 401; a user
who may not read the DAG's runs, 403. Each figure is then checked against its own DAG, with the
same check: predict's served days, feedback's hit rates and rollbacks are neither read nor shown
to a user who may not read that DAG's runs, and the rollback button shows only to a user who may
trigger recommend_rollback. Read-only: the rollback button calls Airflow's REST API from the
browser, as the user. A BigQuery or Cloud Storage outage is a 503 with a one-line message, never
a stack trace. Every response carries a Content-Security-Policy (pages.PAGE_POLICY; the stored
report a sandboxing one).
"""

from __future__ import annotations

import logging
import urllib.parse
from functools import cache

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from operators import config as recsys_config
from operators import ui_links
from recommender import decisions, pages
from recommender.store import FIGURE_DAGS, RecommenderStore, Unavailable

log = logging.getLogger(__name__)

MODEL_ID = pages.MODEL_ID
HTML = "text/html; charset=utf-8"
# The stored report: no script at all, and a sandbox (an opaque origin) for whatever it holds; its
# own inline styles are the one thing it may use.
REPORT_POLICY = ("sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                 "frame-ancestors 'self'")


@cache
def store() -> RecommenderStore:
    """One store per API server process, with the DAGs' configuration (the environment)."""
    return RecommenderStore(recsys_config.load())


def _api_base() -> str:
    """The path Airflow is served under (its REST API and UI live below it), for same-origin
    calls from the browser."""
    return urllib.parse.urlsplit(ui_links.base_url()).path.rstrip("/")


def _unavailable(exc: Unavailable, json: bool = False) -> Response:
    log.warning("Recommender page: %s", exc)
    if json:
        return JSONResponse({"detail": str(exc)}, status_code=503)
    return HTMLResponse(pages.unavailable_page(str(exc)), status_code=503)


def create_app() -> FastAPI:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag

    app = FastAPI(title="Recommender", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN,
                                                            param_dag_id="recommend_train"))])
    days_query = Query(30, ge=1, le=366, description="days of history, ending today (UTC)")
    signed_in = Depends(get_user)  # the user the app-level check let in

    def allowed(request: Request, user, method: str, dag_id: str) -> bool:
        # Airflow's own check, as its REST API makes it for that DAG's runs.
        try:
            requires_access_dag(method, DagAccessEntity.RUN, param_dag_id=dag_id)(request, user)
        except HTTPException as exc:
            if exc.status_code == 403:
                return False
            raise
        return True

    def readable(request: Request, user) -> frozenset[str]:
        return frozenset(d for d in FIGURE_DAGS if allowed(request, user, "GET", d))

    @app.middleware("http")
    async def policy(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", pages.PAGE_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        """The page's script and stylesheet (their URLs carry a digest of their content)."""
        if name not in pages.STATIC_FILES:
            return Response(status_code=404)
        return Response((pages.STATIC / name).read_bytes(), media_type=pages.STATIC_FILES[name],
                        headers={"Cache-Control": "private, max-age=86400"})

    def overview_data(request: Request, user, days: int) -> dict:
        # recommend_train's own pending decisions: the app-level check let this user read its runs
        return {**store().overview(days, readable=readable(request, user)), "decisions": decisions.pending()}

    @app.get("/api/overview")
    def overview_json(request: Request, user=signed_in, days: int = days_query) -> Response:
        """The charts' and the model table's data (what the page draws), as JSON."""
        try:
            return JSONResponse(overview_data(request, user, days))
        except Unavailable as exc:
            return _unavailable(exc, json=True)

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request, user=signed_in, days: int = days_query) -> Response:
        try:
            data = overview_data(request, user, days)
        except Unavailable as exc:
            return _unavailable(exc)
        return HTMLResponse(pages.overview_page(data, ui_links.base_url()))

    def find(request: Request, user, model_id: str, days: int) -> dict | None:
        if not MODEL_ID.fullmatch(model_id):
            return None
        found = store().model(model_id, days, readable=readable(request, user))
        if found is not None:
            found["may_rollback"] = allowed(request, user, "POST", "recommend_rollback")
        return found

    @app.get("/api/models/{model_id}")
    def model_json(model_id: str, request: Request, user=signed_in, days: int = days_query) -> Response:
        try:
            model = find(request, user, model_id, days)
        except Unavailable as exc:
            return _unavailable(exc, json=True)
        if model is None:
            return JSONResponse({"detail": f"no model {model_id} in model_metrics"}, status_code=404)
        return JSONResponse(model)

    @app.get("/models/{model_id}", response_class=HTMLResponse)
    def model(model_id: str, request: Request, user=signed_in, days: int = days_query) -> Response:
        try:
            found = find(request, user, model_id, days)
        except Unavailable as exc:
            return _unavailable(exc)
        if found is None:
            return HTMLResponse(pages.not_found_page(f"No model {model_id} in model_metrics (its "
                                                    "row may have expired)."), status_code=404)
        return HTMLResponse(pages.model_page(found, ui_links.base_url(), _api_base()))

    @app.get("/models/{model_id}/report")
    def report(model_id: str) -> Response:
        """The model's own report.html, as evaluate_task wrote it (self-contained)."""
        try:
            body = store().report(model_id) if MODEL_ID.fullmatch(model_id) else None
        except Unavailable as exc:
            return _unavailable(exc)
        if body is None:
            return HTMLResponse(pages.not_found_page(f"No evaluation report for {model_id} (models "
                                                    "evaluated before reports existed have none)."),
                                status_code=404)
        # The report is ours, but it is a file in a bucket: it runs no script, on no origin of ours.
        return Response(body, media_type=HTML, headers={"Content-Security-Policy": REPORT_POLICY})

    @app.get("/runs/{run_id}/report")
    def run_report(run_id: str) -> Response:
        """The evaluate task's extra link: the report of the model its run evaluated."""
        try:
            model_id = store().model_evaluated_by(run_id)
        except Unavailable as exc:
            return _unavailable(exc)
        if model_id is None:
            return HTMLResponse(pages.not_found_page(f"Run {run_id} has evaluated no model yet."),
                                status_code=404)
        return RedirectResponse(f"../../models/{model_id}/report", status_code=307)

    return app
