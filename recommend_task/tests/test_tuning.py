"""train_task's hyper-parameter search (issue 41), against the BigQuery emulator with real ALS."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pytest
from trainer_support.helpers import RUN_DATE, query, seed

from trainer import contract
from trainer.model import weighting
from trainer.model.matrices import load_matrices
from trainer.model.model_artifact import load_model
from trainer.step import preflight
from trainer.storage import artifacts
from trainer.tuning import settings, successive_halving, validation_split

COMMON = ("--iterations", "8", "--num-threads", "1")


def matrices_for(step, uri: str, run_date: dt.date = RUN_DATE) -> None:
    rc, err = step("create_cf_matrices_task", "--run-date", run_date.isoformat(), "--artifacts-uri", uri,
                   "--lookback-days", "20")
    assert rc == 0, err


def train(step, uri: str, *extra: str, run_date: dt.date = RUN_DATE) -> tuple[dict, dict]:
    """Run train_task; returns the model's model.json and trials.json."""
    rc, err = step("train_task", "--run-date", run_date.isoformat(), "--artifacts-uri", uri, *COMMON, *extra)
    assert rc == 0, err
    store = artifacts.ArtifactStore()
    candidate = store.read_json(f"{uri}/runs/{run_date}/{contract.CANDIDATE_RECORD}")
    model = store.read_json(f"{candidate['model_uri']}/model.json")
    return model, store.read_json(f"{candidate['model_uri']}/{contract.TRIALS_RECORD}")


@pytest.fixture
def seeded(step, tmp_path):
    seed(step)
    uri = str(tmp_path / "artifacts")
    matrices_for(step, uri)
    return uri


def test_the_validation_split_is_the_training_parts_last_days_and_never_the_holdout(
        seeded, bq_client, project, dataset):
    matrices, manifest = load_matrices(artifacts.ArtifactStore(), seeded, RUN_DATE)
    window = manifest["window"]
    # 20 days, the last 2 the holdout: the validation is the 2 training days before them.
    assert window["validation_start"] == str(RUN_DATE - dt.timedelta(days=3))
    assert window["train_end"] == str(RUN_DATE - dt.timedelta(days=2))
    weights = {"view": 1.0, "start": 2.0, "complete": 4.0}
    rows = query(bq_client, f"""
        SELECT user_id, item_id, event_type FROM `{project}.{dataset}.events`
        WHERE event_date BETWEEN '{window['validation_start']}' AND '{window['train_end']}'""")
    expected: dict[tuple[str, str], float] = {}
    for r in rows:
        key = (r["user_id"], r["item_id"])
        expected[key] = expected.get(key, 0) + weights[r["event_type"]]
    got = matrices.validation.tocoo()
    found = {(matrices.users.ids[u], matrices.items.ids[i]): float(w)
             for u, i, w in zip(got.row, got.col, got.data, strict=True)}
    assert found == {key: w for key, w in expected.items()
                     if key[0] in set(matrices.users.ids) and key[1] in set(matrices.items.ids)}
    assert found and manifest["counts"]["validation_nnz"] == len(found)
    # Part of training, so the model still learns the validation days after the search...
    assert (matrices.train - matrices.validation).min() >= 0
    # ...and nothing of the holdout days (the gate's) is in it.
    holdout = query(bq_client, f"""SELECT DISTINCT user_id, item_id FROM `{project}.{dataset}.events`
        WHERE event_date >= '{window['holdout_start']}'""")
    only_holdout = {(r["user_id"], r["item_id"]) for r in holdout} - set(expected)
    assert only_holdout and not only_holdout & set(found)


def test_a_search_chooses_on_validation_and_records_its_trials_seed_and_winner(
        step, seeded, bq_client, project, dataset):
    model, trials = train(step, seeded, "--tune", "always", "--random-seed", "7")
    params = model["params"]
    assert trials["source"] == "search" and trials["seed"] == 7 and trials["tuned_on"] == str(RUN_DATE)
    assert trials["trials"][0] | {"trial": 0} == trials["trials"][0]
    assert {k: trials["trials"][0][k] for k in settings.DEFAULTS.to_dict()} == settings.DEFAULTS.to_dict()
    assert len(trials["trials"]) == 9 and trials["validation"]["users"] >= validation_split.MIN_USERS
    winners = [t for t in trials["trials"] if t["winner"]]
    assert len(winners) == 1 and winners[0]["status"] == "ok"
    chosen = settings.Settings.from_dict(trials["settings"])
    assert chosen == settings.Settings.from_dict({**params, "weighting": weighting.of(params)})
    assert {k: winners[0][k] for k in chosen.to_dict()} == chosen.to_dict()
    fitted = [t for t in trials["trials"] if t["rung"] >= 0]
    assert all(t["seconds"] > 0 and t["iterations"] >= 1 for t in fitted)
    # The last rung's best ndcg whose recall is within the gate's 2 % of today's settings'.
    last = max(t["rung"] for t in fitted)
    floor = trials["trials"][0]["recall_at_10"] * 0.98
    eligible = [t for t in fitted if t["rung"] == last and t["status"] == "ok" and t["recall_at_10"] >= floor]
    assert winners[0]["ndcg_at_10"] == max(t["ndcg_at_10"] for t in eligible)
    assert model["metadata"]["tuning"]["source"] == "search"
    record = artifacts.ArtifactStore().read_json(contract.tuning_record_uri(seeded, str(RUN_DATE)))
    assert record["model_id"] == model["model_id"] and record["settings"] == chosen.to_dict()

    rc, err = step("evaluate_task", "--run-date", str(RUN_DATE), "--artifacts-uri", seeded)
    assert rc == 0, err
    rc, err = step("evaluate_task", "--run-date", str(RUN_DATE), "--artifacts-uri", seeded)  # re-run
    assert rc == 0, err
    rows = query(bq_client, f"SELECT * FROM `{project}.{dataset}.tuning_trials` ORDER BY trial")
    assert [r["trial"] for r in rows] == list(range(9))  # replaced, never duplicated
    assert [r["winner"] for r in rows] == [t["winner"] for t in trials["trials"]]
    assert rows[0]["validation_ndcg"] == pytest.approx(trials["trials"][0]["ndcg_at_10"])
    metrics = query(bq_client, f"SELECT * FROM `{project}.{dataset}.model_metrics`")[0]
    assert metrics["tuning_source"] == "search" and metrics["tuned_on"] == RUN_DATE
    assert json.loads(metrics["params"])["regularization"] == chosen.regularization


def test_a_param_fixes_its_dimension_of_the_search(step, seeded):
    model, trials = train(step, seeded, "--tune", "always", "--factors", "24", "--weighting", "log1p")
    assert {t["factors"] for t in trials["trials"]} == {24}
    assert {t["weighting"] for t in trials["trials"]} == {"log1p"}
    assert len({(t["regularization"], t["alpha"]) for t in trials["trials"]}) == len(trials["trials"]) > 1
    assert model["params"]["factors"] == 24 and model["params"]["weighting"] == "log1p"


def write_tuning_record(uri: str, day: dt.date, **values) -> dict:
    chosen = settings.Settings(factors=32, regularization=3.0, alpha=4.0, weighting="log1p").to_dict()
    record = {"run_date": str(day), "settings": {**chosen, **values},
              "model_id": f"als-{day:%Y%m%d}-0123456789", "seed": 1}
    artifacts.ArtifactStore().write_json(contract.tuning_record_uri(uri, str(day)), record)
    return record


def test_weekly_reuses_the_newest_settings_tuned_on_or_before_the_last_training_day(step, seeded):
    train_end = RUN_DATE - dt.timedelta(days=2)
    old = write_tuning_record(seeded, train_end - dt.timedelta(days=3))
    write_tuning_record(seeded, train_end - dt.timedelta(days=5), factors=48)
    write_tuning_record(seeded, train_end + dt.timedelta(days=1), factors=96)  # this run's future
    model, trials = train(step, seeded, "--tune", "weekly", "--alpha", "6")
    assert trials["source"] == "reused" and trials["trials"] == []
    assert trials["tuned_on"] == old["run_date"] and trials["tuned_model_id"] == old["model_id"]
    assert model["params"] | {"alpha": 4.0} == {**model["params"], **old["settings"]} | {"alpha": 4.0}
    assert model["params"]["alpha"] == 6.0  # the run's own param fixes its dimension
    assert model["metadata"]["tuning"]["tuned_model_id"] == old["model_id"]


def test_weekly_searches_when_the_usable_settings_are_a_week_old_or_only_in_the_future(step, seeded):
    write_tuning_record(seeded, RUN_DATE - dt.timedelta(days=7))
    write_tuning_record(seeded, RUN_DATE)  # tuned on this run's holdout days: never used
    _, trials = train(step, seeded, "--tune", "weekly")
    assert trials["source"] == "search" and trials["trials"]


def test_tune_off_trains_with_todays_settings_and_reuses_nothing(step, seeded):
    write_tuning_record(seeded, RUN_DATE - dt.timedelta(days=4))
    model, trials = train(step, seeded, "--tune", "off")
    assert trials["source"] == "default" and trials["trials"] == []
    assert {k: model["params"][k] for k in ("factors", "regularization", "alpha")} == {
        "factors": 64, "regularization": 0.05, "alpha": 2.0} and "weighting" not in model["params"]


def test_a_validation_split_too_small_trains_with_todays_settings_and_says_so(step, tmp_path):
    rc, err = step("seed_events", "--end-date", str(RUN_DATE), "--users", "15", "--items", "40",
                   "--events", "900", "--days", "20", "--clusters", "2")
    assert rc == 0, err
    uri = str(tmp_path / "artifacts")
    matrices_for(step, uri)
    rc, err = step("train_task", "--run-date", str(RUN_DATE), "--artifacts-uri", uri, *COMMON,
                   "--tune", "always")
    assert rc == 0, err
    lines = [line for line in err.splitlines() if "no tuning search" in line]
    assert len(lines) == 1 and "too small" in lines[0], err
    model, trials = train(step, uri, "--tune", "always")
    assert trials["source"] == "default" and trials["trials"] == []
    assert trials["note"].startswith("validation split too small to choose")
    assert model["params"]["regularization"] == settings.DEFAULTS.regularization
    assert not artifacts.ArtifactStore().exists(contract.tuning_record_uri(uri, str(RUN_DATE)))


def test_a_time_budget_too_small_for_one_trial_trains_with_todays_settings(step, seeded):
    matrices, _ = load_matrices(artifacts.ArtifactStore(), seeded, RUN_DATE)
    refit = preflight.train_estimate(nnz=matrices.train.nnz, users=len(matrices.users),
                                     items=len(matrices.items), factors=64, iterations=8)
    one_cpu = dataclasses.replace(preflight.Machine.detect(), vcpus=1)  # --num-threads 1
    budget = 1.2 * refit.seconds(one_cpu)  # the refit fits, a search does not
    _, trials = train(step, seeded, "--tune", "always", "--time-budget-s", f"{budget:.6f}")
    assert trials["source"] == "default" and trials["note"].startswith("budget too small for one trial")


def test_the_search_and_the_refit_stay_within_the_steps_time_budget(step, seeded):
    """The step's time budget (its task's timeout) bounds the search to two thirds of it, and
    leaves a candidate only if its refit takes at most the last third."""
    _, trials = train(step, seeded, "--tune", "always", "--time-budget-s", "6")
    assert trials["source"] == "search" and 0 < trials["budget_s"] <= 4.0
    refit_unit = trials["costs"]["fit_per_nnz_iteration_factor"]
    matrices, _ = load_matrices(artifacts.ArtifactStore(), seeded, RUN_DATE)
    chosen = trials["settings"]
    assert refit_unit * matrices.train.nnz * 8 * chosen["factors"] <= 6 / 3


def test_a_trial_with_non_finite_factors_is_dropped_and_counted_and_the_search_goes_on(
        seeded, monkeypatch):
    matrices, _ = load_matrices(artifacts.ArtifactStore(), seeded, RUN_DATE)
    split = validation_split.carve(matrices, 10, 0)
    candidates = settings.candidates(6, 3, {})
    broken = candidates[2]
    real = successive_halving.fit_factors

    def fit(fit_matrix, chosen, iterations, seed, threads):
        users, items = real(fit_matrix, chosen, iterations, seed, threads)
        if chosen == broken:  # what a diverging solve leaves
            users[0, 0] = np.nan
        return users, items

    monkeypatch.setattr(successive_halving, "fit_factors", fit)
    result = successive_halving.Search(
        split, candidates, iterations=8, k=10, seed=0, num_threads=1, max_regression=0.02,
        budget=successive_halving.Budget(ratio=30.0, train_nnz=matrices.train.nnz),
        too_costly=lambda *_: None).run()
    statuses = {t.settings: t.status for t in result.trials}
    assert statuses[broken] == "nan" and result.dropped_numeric == 1
    assert sum(s == "ok" for s in statuses.values()) >= 2 and result.winner != broken


def test_a_candidate_too_costly_at_scale_is_not_tried(seeded):
    matrices, _ = load_matrices(artifacts.ArtifactStore(), seeded, RUN_DATE)
    split = validation_split.carve(matrices, 10, 0)
    candidates = settings.candidates(6, 3, {})
    result = successive_halving.Search(
        split, candidates, iterations=8, k=10, seed=0, num_threads=1, max_regression=0.02,
        budget=successive_halving.Budget(ratio=30.0, train_nnz=matrices.train.nnz),
        too_costly=lambda s, _costs: "too big" if s.factors > 64 else None).run()
    for trial in result.trials:
        assert (trial.status == "too_costly") == (trial.settings.factors > 64), trial
        assert (trial.rung == -1) == (trial.status == "too_costly")


def test_the_model_folds_users_in_on_the_weighting_it_was_trained_on(step, seeded):
    """Train, evaluate and predict agree: train fits on the weighting's output, and the fold-in
    evaluate and predict share (ModelArtifact.recommend) recovers the trained factors only
    through the same weighting."""
    train(step, seeded, "--tune", "off", "--weighting", "log1p", "--factors", "16", "--iterations", "30")
    store = artifacts.ArtifactStore()
    candidate = store.read_json(f"{seeded}/runs/{RUN_DATE}/{contract.CANDIDATE_RECORD}")
    model = load_model(store, candidate["model_uri"])
    matrices, _ = load_matrices(store, seeded, RUN_DATE)
    assert weighting.of(model.params) == "log1p"
    rows = model.reindex(matrices.train, matrices.items)
    trained = np.arange(rows.shape[0])

    def refolded(matrix):
        return model._factors_of(model._als(), matrix, trained)

    def error(factors):
        return float(np.linalg.norm(factors - model.user_factors) / np.linalg.norm(model.user_factors))

    same, raw = error(refolded(weighting.apply(rows, "log1p"))), error(refolded(rows))
    assert same < 0.05 and raw > 4 * same, (same, raw)
    # evaluate's picks and predict's rows come from recommend(), which applies it itself.
    picks, _ = model.recommend(rows[:50], 10, model.users.ids[:50])
    from trainer.model.topk import top_unseen

    expected, _ = top_unseen(model.item_factors, refolded(weighting.apply(rows, "log1p"))[:50],
                             rows[:50], 10, num_threads=1)
    assert (picks == expected).mean() > 0.99


@pytest.mark.parametrize("seed", range(5))
def test_the_plan_fits_three_refits_whatever_the_candidates_factors(seed):
    """What makes the search cost at most 3x the refit at any scale: its fits, planned in
    factor-iterations, stay within the budget's fit share; today's settings always planned."""
    candidates = settings.candidates(9, seed, {})
    factors = [c.factors for c in candidates]
    budget = successive_halving.Budget(ratio=3.0, train_nnz=1_000_000).factor_iterations(930_000, 15, 64)
    count, rungs = successive_halving.plan(factors, 15, budget)
    assert count >= 2 and rungs == [2, 5]
    planned = sum(successive_halving.planned_cost(factors[:count], rungs))
    assert planned <= successive_halving.FIT_SHARE * budget
    assert successive_halving.plan(factors, 15, 1e12) == (9, [2, 5])  # plenty: every candidate, capped
    assert successive_halving.plan(factors, 15, budget / 10) == (1, [])  # not one challenger
