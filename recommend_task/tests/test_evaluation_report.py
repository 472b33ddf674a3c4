"""The evaluation report: its figures by hand on a small example, and the HTML of a real run
parsed back against the evaluation.json written beside it."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from trainer_support.helpers import RUN_DATE, TRAIN_ARGS, run_training, seed

from trainer.evaluation.html_report import distributions


def test_recall_bins_and_popularity_deciles_of_a_hand_made_example():
    # 20 items; training users per item: item i has 20 - i (item 0 the most popular).
    item_users = np.arange(20, 0, -1)
    # user 0: relevant {0, 5}, picks 0 and 19: recall 0.5; user 1: relevant {3}, no hit;
    # user 2: no holdout item: not judged.
    holdout = sp.csr_matrix(([1.0, 1.0, 1.0], ([0, 0, 1], [0, 5, 3])), shape=(3, 20))
    picks = {"model": np.array([[0, 19], [4, -1], [1, 2]])}
    d = distributions(picks, holdout, item_users, k=2)["model"]
    assert d["recall_histogram"] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0]  # 0.0 and 0.5
    assert d["users_with_no_hit"] == 1
    # Slots 0, 19, 4, 1, 2: deciles of two items each: 1 (items 0, 1), 10 (19), 3 (4), 2 (2).
    assert d["popularity_deciles"] == pytest.approx([0.4, 0.2, 0.2, 0, 0, 0, 0, 0, 0, 0.2])
    assert d["mean_item_user_share"] == pytest.approx(np.mean([20, 1, 16, 19, 18]) / 20)


class _Figures(HTMLParser):
    """The report's machine-readable figures: table cells and chart bars, and anything external."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], float] = {}
        self.bars: dict[str, dict[tuple[str, str], float]] = {}
        self.external: list[str] = []
        self._chart = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script" or "src" in a or "href" in a or tag == "link":
            self.external.append(tag)
        if tag == "td" and "data-metric" in a:
            self.cells[(a["data-recommender"], a["data-metric"])] = float(a["data-value"])
        if tag == "svg":
            self._chart = a["id"]
        if tag == "rect":
            bars = self.bars.setdefault(self._chart, {})
            bars[(a["data-series"], a["data-label"])] = float(a["data-value"])


def test_the_report_of_a_run_shows_exactly_its_evaluation(step, tmp_path):
    art = tmp_path / "artifacts"
    seed(step)
    run_training(step, str(art))
    common = ("--run-date", str(RUN_DATE), "--artifacts-uri", str(art))
    assert step("train_task", *common, *TRAIN_ARGS[2:], "--random-seed", "7")[0] == 0  # vs the published
    assert step("evaluate_task", *common)[0] == 0
    candidate = json.loads((art / "runs" / str(RUN_DATE) / "candidate.json").read_text())
    model_dir = Path(candidate["model_uri"])
    evaluation = json.loads((model_dir / "evaluation.json").read_text())
    assert evaluation["report_uri"] == str(model_dir / "report.html")
    page = _Figures()
    page.feed((model_dir / "report.html").read_text())

    assert page.external == []  # self-contained: no script, stylesheet, image or link
    names = ("model", "popularity", "published")
    assert evaluation["published_model_id"] and all(evaluation["metrics"][n] for n in names)
    for name in names:
        for metric in ("precision", "recall", "map", "ndcg", "coverage"):
            assert page.cells[(name, metric)] == evaluation["metrics"][name][metric]
        spread = evaluation["distributions"][name]
        bins = [v for (series, _), v in sorted(page.bars["recall_histogram"].items()) if series == name]
        assert bins == spread["recall_histogram"]  # labels 0.0-0.1 ... 0.9-1.0 sort in order
        assert sum(spread["recall_histogram"]) == evaluation["metrics"][name]["users"]
        assert sum(spread["popularity_deciles"]) == pytest.approx(1.0)
        deciles = {label: v for (series, label), v in page.bars["popularity_deciles"].items()
                   if series == name}
        assert [deciles[str(i)] for i in range(1, 11)] == spread["popularity_deciles"]
    assert page.bars["metrics"][("model", "recall@10")] == evaluation["metrics"]["model"]["recall"]
    assert (evaluation["distributions"]["popularity"]["mean_item_user_share"]
            > evaluation["distributions"]["model"]["mean_item_user_share"])  # popularity is the biased one
