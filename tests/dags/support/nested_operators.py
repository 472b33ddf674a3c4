"""Record every operator built while another operator runs (inside its ``execute``,
``execute_complete`` or ``poke``): a launcher or sensor that builds and runs a stock operator
inside ours. Used by test_no_nested_operators.py and, for every test of the DAG and Docker
suites, by their conftest."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

RUNNING = frozenset({"execute", "execute_complete", "poke"})


def _running_operator(frame, building) -> object | None:
    """The operator whose execute/execute_complete/poke is on the stack above ``frame``."""
    from airflow.sdk import BaseOperator

    while frame is not None:
        if frame.f_code.co_name in RUNNING:
            owner = frame.f_locals.get("self")
            if isinstance(owner, BaseOperator) and owner is not building:
                return owner
        frame = frame.f_back
    return None


@contextlib.contextmanager
def operators_built_while_executing() -> Iterator[list[str]]:
    """Within the block, wrap ``BaseOperator.__init__``; yields the list of
    ``"<Inner> built in <Outer>.<task_id>"`` entries it records."""
    from airflow.sdk import BaseOperator

    built: list[str] = []
    original = BaseOperator.__init__

    def init(self, *args, **kwargs):
        outer = _running_operator(sys._getframe(1), self)
        if outer is not None:
            built.append(f"{type(self).__name__} built in {type(outer).__name__}.{outer.task_id}")
        return original(self, *args, **kwargs)

    # What Airflow's metaclass put on the original: the function it wrapped (compared at each
    # construction) and its parameter names (what partial() and expand() accept).
    init.__wrapped__ = original.__wrapped__
    init._BaseOperatorMeta__param_names = original._BaseOperatorMeta__param_names
    BaseOperator.__init__ = init
    try:
        yield built
    finally:
        BaseOperator.__init__ = original
