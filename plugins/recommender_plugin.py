"""The Recommender page in Airflow's UI (Airflow 3.1 to 3.3).

* ``fastapi_apps``: the page and its JSON endpoints (:mod:`recommender.app`), served by
  Airflow's API server under ``/recommender`` with Airflow's own authentication.
* ``external_views``: a "Recommender" entry in the navigation and a "Recommender" tab on the
  DAG pages, both showing that page inside the UI. A plugin's own HTML page rather than a
  ``react_apps`` bundle: React apps are experimental in 3.1 and would need a JavaScript build;
  external views and FastAPI apps are stable across the supported range.

Airflow imports this module in every component (scheduler, workers, DAG processor): the app,
FastAPI and the Google clients are imported only when the API server asks for the app.
"""

from __future__ import annotations

import urllib.parse

from airflow.plugins_manager import AirflowPlugin

from operators.ui_links import RECOMMENDER_PREFIX, base_url


def _href(query: str = "") -> str:
    # Airflow serves the UI and plugin apps under the path of [api] base_url.
    return urllib.parse.urlsplit(base_url()).path.rstrip("/") + RECOMMENDER_PREFIX + "/" + query


class RecommenderPlugin(AirflowPlugin):
    name = "recommender_plugin"

    @property
    def fastapi_apps(self) -> list[dict]:
        from recommender.app import create_app

        return [{"app": create_app(), "url_prefix": RECOMMENDER_PREFIX, "name": "Recommender"}]

    @property
    def external_views(self) -> list[dict]:
        return [
            {"name": "Recommender", "href": _href(), "destination": "nav", "url_route": "recommender",
             "category": "browse"},
            # A dag tab shows on every DAG (Airflow has no per-DAG scoping of tabs up to 3.3).
            {"name": "Recommender", "href": _href(), "destination": "dag", "url_route": "recommender-dag"},
        ]
