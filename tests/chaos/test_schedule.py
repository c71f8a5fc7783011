"""Same seed, same fault schedule."""

from __future__ import annotations

import pytest

from controller.chaos.faults import FAULTS, OWNS_CONTROLLER, OWNS_POSTGRES, available
from controller.chaos.schedule import make_schedule

NAMES = ["w01", "w02", "w03", "w04", "w05"]
KINDS = available({OWNS_CONTROLLER, OWNS_POSTGRES})


def test_same_seed_same_schedule_other_seed_other_schedule() -> None:
    first = make_schedule(1, 30, NAMES, KINDS, 0.5)
    assert make_schedule(1, 30, NAMES, KINDS, 0.5) == first
    assert make_schedule(2, 30, NAMES, KINDS, 0.5) != first
    assert [p.index for p in first] == list(range(1, 31))


def test_every_type_at_least_once_when_there_are_enough_faults() -> None:
    plans = make_schedule(3, len(KINDS), NAMES, KINDS, 1.0)
    assert sorted(p.kind for p in plans) == sorted(f.kind for f in KINDS)
    assert {p.kind for p in make_schedule(3, 300, NAMES, KINDS, 1.0)} == {f.kind for f in KINDS}


def test_targets_params_and_pacing() -> None:
    for p in make_schedule(5, 200, NAMES, KINDS, 0.5):
        fault = FAULTS[p.kind]
        assert (p.target is None) == (fault.scope == "fleet")
        assert p.target is None or p.target in NAMES
        assert p.delay >= 0
        if p.kind == "token":
            assert p.param("variant") in ("delete", "corrupt")
        if p.kind == "controller-kill" and p.param("stall") != "none":
            assert p.param("workspace") in NAMES
    gaps = [p.delay for p in make_schedule(5, 400, NAMES, KINDS, 2.0)]
    assert 0.3 < sum(gaps) / len(gaps) < 0.7  # mean 1/rate


def test_bad_shapes_are_refused() -> None:
    assert make_schedule(1, 0, NAMES, KINDS, 1.0) == []
    with pytest.raises(ValueError, match="rate"):
        make_schedule(1, 3, NAMES, KINDS, 0)
    with pytest.raises(ValueError, match="no fault type"):
        make_schedule(1, 3, NAMES, [], 1.0)
    with pytest.raises(ValueError, match="workspace"):
        make_schedule(1, 3, [], KINDS, 1.0)
