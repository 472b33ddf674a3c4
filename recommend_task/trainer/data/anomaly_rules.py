"""Anomaly rules over the run date's event statistics (:mod:`trainer.data.event_stats`).

A day that breaks a rule is not trained on: the step fails permanently (exit 2) with one line
naming each broken rule, its figure and its limit, so the published model stays served. An
operator who knows the day is right accepts it once (``--accept-anomalies true``, the DAG param
``accept_anomalies``); the acceptance is recorded with the day's statistics.

==================  ==========================================================================
rule                breaks when
==================  ==========================================================================
event_type_drop     a known event type's count on the day is below ``--min-type-ratio`` of its
                    trailing median (0 events: the type vanished)
bot_user            one user made more than ``--max-user-share`` of the day's events
item_drift          the item-popularity Jensen-Shannon distance exceeds ``--max-item-drift``
type_drift          the event-type mix's Jensen-Shannon distance exceeds ``--max-type-drift``
new_items           more than ``--max-new-item-share`` of the day's events are on items unseen
                    in the trailing days (a renumbered catalogue)
==================  ==========================================================================

Rules that compare with the trailing days need at least one; none is checked on a day with
fewer than ``--anomaly-min-events`` valid events, where these figures are mostly noise (the
statistics are still recorded).
"""

from __future__ import annotations

import argparse
import dataclasses

from trainer.core.errors import AnomalyError, TrainerError
from trainer.data.event_stats import DayStats

# The statuses the event_stats table records.
OK, ANOMALY, ACCEPTED, UNCHECKED = "ok", "anomaly", "accepted", "unchecked"


@dataclasses.dataclass(frozen=True)
class Rules:
    """The limits; the defaults are the data scientists' (``--help`` shows them)."""

    min_type_ratio: float = 0.5
    max_user_share: float = 0.1
    max_item_drift: float = 0.5
    max_type_drift: float = 0.2
    max_new_item_share: float = 0.5
    min_events: int = 1000

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Anomaly:
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.message} [rule {self.rule}]"


def parse_bool(value: str) -> bool:
    """``true`` / ``false`` (what a template renders a boolean param to), any case."""
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
    return lowered == "true"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The rules' limits and the operator's acceptance."""
    d = Rules()
    parser.add_argument("--min-type-ratio", type=float, default=d.min_type_ratio,
                        help="rule event_type_drop: each event type's count must reach this share of "
                        "its median over the 7 days before")
    parser.add_argument("--max-user-share", type=float, default=d.max_user_share,
                        help="rule bot_user: the most events one user may make, as a share of the day's")
    parser.add_argument("--max-item-drift", type=float, default=d.max_item_drift,
                        help="rule item_drift: largest Jensen-Shannon distance (0..1) of the day's item "
                        "popularity from the 7 days before")
    parser.add_argument("--max-type-drift", type=float, default=d.max_type_drift,
                        help="rule type_drift: largest Jensen-Shannon distance (0..1) of the day's event-"
                        "type mix from the 7 days before")
    parser.add_argument("--max-new-item-share", type=float, default=d.max_new_item_share,
                        help="rule new_items: largest share of the day's events on items unseen in the 7 "
                        "days before")
    parser.add_argument("--anomaly-min-events", type=int, default=d.min_events,
                        help="check no rule on a day with fewer valid events (0: always check)")
    parser.add_argument("--accept-anomalies", type=parse_bool, default=False, metavar="{true,false}",
                        help="train on this day even if it breaks rules (recorded in event_stats)")


def rules_from(args: argparse.Namespace) -> Rules:
    """The limits the arguments ask for; a limit outside its range raises TrainerError."""
    rules = Rules(args.min_type_ratio, args.max_user_share, args.max_item_drift, args.max_type_drift,
                  args.max_new_item_share, args.anomaly_min_events)
    for name in ("min_type_ratio", "max_user_share", "max_item_drift", "max_type_drift",
                 "max_new_item_share"):
        if not 0 <= getattr(rules, name) <= 1:
            raise TrainerError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(rules, name)}")
    if rules.min_events < 0:
        raise TrainerError(f"--anomaly-min-events must be >= 0, got {rules.min_events}")
    return rules


def _pct(value: float) -> str:
    return f"{value * 100:.0f} %"


def check(stats: DayStats, rules: Rules) -> list[Anomaly]:
    """Every rule ``stats`` breaks, in the order of the table above."""
    if stats.events < rules.min_events:
        return []
    found = []
    for event_type, median in (stats.trailing_median_by_type or {}).items():
        count = stats.events_by_type.get(event_type, 0)
        if median > 0 and count < rules.min_type_ratio * median:
            limit = f"(limit {_pct(rules.min_type_ratio)})"
            what = (f"vanished {limit}: 0 events against a trailing median of {median:,.0f}" if count == 0
                    else f"fell to {_pct(count / median)} of its trailing median {limit}: {count:,} events "
                    f"against {median:,.0f}")
            found.append(Anomaly("event_type_drop", f"event type '{event_type}' {what}"))
    if stats.top_user_share is not None and stats.top_user_share > rules.max_user_share:
        found.append(Anomaly("bot_user", f"user '{stats.top_user_id}' made {_pct(stats.top_user_share)} of "
                             f"the day's events (limit {_pct(rules.max_user_share)})"))
    if stats.item_drift is not None and stats.item_drift > rules.max_item_drift:
        found.append(Anomaly("item_drift", f"item popularity drifted to a Jensen-Shannon distance of "
                             f"{stats.item_drift:.2f} from the trailing days "
                             f"(limit {rules.max_item_drift:.2f})"))
    if stats.type_drift is not None and stats.type_drift > rules.max_type_drift:
        found.append(Anomaly("type_drift", f"the event-type mix drifted to a Jensen-Shannon distance of "
                             f"{stats.type_drift:.2f} from the trailing days "
                             f"(limit {rules.max_type_drift:.2f})"))
    if stats.new_item_event_share is not None and stats.new_item_event_share > rules.max_new_item_share:
        found.append(Anomaly("new_items", f"{_pct(stats.new_item_event_share)} of the day's events are on "
                             f"items unseen in the trailing days (limit {_pct(rules.max_new_item_share)})"))
    return found


def status_of(stats: DayStats, rules: Rules, anomalies: list[Anomaly], accepted: bool) -> str:
    """What the event_stats row says of the day."""
    if stats.events < rules.min_events:
        return UNCHECKED
    if not anomalies:
        return OK
    return ACCEPTED if accepted else ANOMALY


def refusal(stats: DayStats, anomalies: list[Anomaly]) -> AnomalyError:
    """The step's one-line error for a day that breaks rules."""
    return AnomalyError(f"events of {stats.run_date} look wrong, nothing trained: "
                        + "; ".join(str(a) for a in anomalies)
                        + " (to train on them anyway, run with accept_anomalies)")
