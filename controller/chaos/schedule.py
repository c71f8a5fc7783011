"""The fault schedule: a pure function of the seed and the run's shape.

`make_schedule(seed, count, workspaces, faults, rate)` returns the same list
for the same arguments: which fault, on which workspace, with which
parameters, and how long after the previous one (exponential gaps with mean
1/rate). When there are at least as many faults as fault types, every type
appears at least once. The runner may start a fault later than planned (it
waits for the target to be idle and converged), never in another order.
"""

from __future__ import annotations

import random

from controller.chaos.faults import Fault
from controller.chaos.model import FaultPlan


def make_schedule(seed: int, count: int, workspaces: list[str], faults: list[Fault],
                  rate: float) -> list[FaultPlan]:
    if count < 0:
        raise ValueError("the number of faults must not be negative")
    if rate <= 0:
        raise ValueError("the fault rate must be positive")
    if count and not faults:
        raise ValueError("no fault type is available for this run")
    if count and not workspaces:
        raise ValueError("a schedule needs at least one workspace")
    rng = random.Random(seed)
    kinds: list[Fault] = []
    if count >= len(faults):
        kinds = list(faults)  # each type at least once
    kinds += rng.choices(faults, weights=[f.weight for f in faults], k=count - len(kinds))
    rng.shuffle(kinds)
    plans = []
    for index, fault in enumerate(kinds, start=1):
        target = rng.choice(workspaces) if fault.scope == "workspace" else None
        params = fault.params(rng, workspaces)
        delay = round(rng.expovariate(rate), 3)
        plans.append(FaultPlan(index, fault.kind, target, delay, tuple(sorted(params.items()))))
    return plans
