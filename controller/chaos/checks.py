"""The verdict's pure parts: convergence, cause attribution, secret scan.

No I/O: the observer and the runner collect the data, these functions judge
it, so every rule is tested with plain values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from controller.chaos.files import FILES_DIR, FileLoss, WrittenFile
from controller.chaos.model import (
    ANSWERS,
    DEGRADED_CAUSE,
    FILES,
    INJECTED,
    MAX_NOT_INJECTED,
    DegradedSeen,
    FaultRecord,
    Violation,
)
from controller.chaos.ports import ContainerLike
from controller.chaos.workload import Failed

# A Degraded seen this long before a fault's injection or after its convergence is
# still the fault's: status writes and event timestamps trail the cause a little.
ATTRIBUTION_GRACE_SECONDS = 5.0


def condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def phase(obj: Mapping[str, Any]) -> str:
    return str((obj.get("status") or {}).get("phase") or "Pending")


def degraded_reason(obj: Mapping[str, Any]) -> str:
    d = condition(obj, "Degraded")
    return str(d.get("reason", "")) if d.get("status") == "True" else ""


def convergence_problems(obj: Mapping[str, Any] | None, mine: Sequence[ContainerLike],
                         expected_hash: str | None) -> list[str]:
    """Why a workspace is not (yet) in the state docs/design.md section 8.1 demands; [] if so."""
    if obj is None:
        return ["workspace not found"]
    problems = []
    status = obj.get("status") or {}
    if phase(obj) != "Online":
        reason = degraded_reason(obj)
        problems.append(f"phase {phase(obj)}" + (f" ({reason})" if reason else ""))
    if condition(obj, "Ready").get("status") != "True":
        problems.append("Ready is not True")
    generation = (obj.get("metadata") or {}).get("generation")
    if status.get("observedGeneration") != generation:
        problems.append(f"observedGeneration {status.get('observedGeneration')} "
                        f"!= generation {generation}")
    if len(mine) != 1:
        states = ", ".join(f"{c.name} {c.state}" for c in mine) or "none"
        problems.append(f"{len(mine)} containers ({states})")
        return problems
    c = mine[0]
    if c.state != "running":
        problems.append(f"container {c.name} is {c.state}")
    if c.id != status.get("containerID"):
        problems.append(f"container {c.id[:12]} is not status.containerID "
                        f"{str(status.get('containerID'))[:12]}")
    if expected_hash is not None and c.config_hash != expected_hash:
        problems.append(f"container config hash {c.config_hash[:12]} != current "
                        f"{expected_hash[:12]}")
    if c.token_generation != status.get("tokenGeneration"):
        problems.append(f"container token generation {c.token_generation} != "
                        f"status.tokenGeneration {status.get('tokenGeneration')}")
    return problems


def active(records: Iterable[FaultRecord], workspace: str, at: float, end_of_run: float,
           grace: float = ATTRIBUTION_GRACE_SECONDS) -> list[FaultRecord]:
    """Faults whose window (injection .. convergence, with grace) covers `at` on `workspace`."""
    found = []
    for r in records:
        if r.injected_at is None or workspace not in r.affected:
            continue
        start, end = r.window(end_of_run)
        if start - grace <= at <= end + grace:
            found.append(r)
    return found


def fault_names(records: Sequence[FaultRecord]) -> str:
    return ", ".join(r.plan.label for r in records) or "none"


def attribute(seen: Iterable[DegradedSeen], records: Sequence[FaultRecord],
              end_of_run: float) -> list[Violation]:
    """Section 8.5: every Degraded must name a cause some active fault may have.

    Also records, per fault, which reasons were seen while it was active.
    """
    violations: dict[tuple[str, str, str], Violation] = {}
    for d in sorted(seen, key=lambda s: s.at):
        candidates = active(records, d.workspace, d.at, end_of_run)
        explains = [r for r in candidates if d.reason in r.may_cause]
        strictly = [r for r in explains if r.window(end_of_run)[0] <= d.at
                    <= r.window(end_of_run)[1]]
        for r in strictly or explains or candidates:
            r.detected.add(d.reason)
        if explains:
            continue
        faults = fault_names(candidates)
        if candidates:
            allowed = sorted(set().union(*(r.may_cause for r in candidates))) or ["none"]
            detail = (f"Degraded {d.reason} ({d.message[:120]}) at {d.at:.1f}s, seen in "
                      f"{d.source}; the fault(s) in effect may cause only "
                      f"{', '.join(allowed)}")
        else:
            detail = (f"Degraded {d.reason} ({d.message[:120]}) at {d.at:.1f}s, seen in "
                      f"{d.source}, with no fault in effect on this workspace")
        key = (d.workspace, d.reason, faults)
        violations.setdefault(key, Violation(DEGRADED_CAUSE, d.workspace, faults, detail, d.at))
    return list(violations.values())


def unreported(records: Sequence[FaultRecord]) -> list[Violation]:
    """A fault that must be visible (e.g. a pause longer than the TTL) was never reported."""
    violations = []
    for r in records:
        if r.injected_at is None or r.skipped or not r.must_cause:
            continue
        if not r.must_cause & r.detected:
            target = r.plan.target or "fleet"
            violations.append(Violation(
                DEGRADED_CAUSE, r.plan.target, r.plan.label,
                f"the controller never reported Degraded {'/'.join(sorted(r.must_cause))} "
                f"on {target} (seen: {', '.join(sorted(r.detected)) or 'nothing'})",
                r.injected_at))
    return violations


def find_secrets(texts: Mapping[str, str], planted: Mapping[str, str]) -> list[tuple[str, str]]:
    """(where, which) for every planted secret value found in a text."""
    return [(where, label) for where, text in texts.items()
            for label, value in planted.items() if value and value in text]


def orphans(containers: Iterable[ContainerLike], known_ids: set[str]) -> list[ContainerLike]:
    """Containers labelled for a workspace that does not exist."""
    return [c for c in containers if c.workspace_id not in known_ids]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def server_errors(failed: Iterable[Failed], records: Sequence[FaultRecord],
                  at: float) -> list[Violation]:
    """`answers`: one violation per workspace that got a server error from the
    controller itself (Failed.server_error), naming the last fault that touched it."""
    errors: dict[str, list[Failed]] = {}
    for f in failed:
        if f.server_error:
            errors.setdefault(f.workspace, []).append(f)
    violations = []
    for name, failures in sorted(errors.items()):
        touching = [r for r in records if name in r.affected and r.injected_at is not None]
        outcomes = ", ".join(sorted({f.outcome for f in failures}))
        violations.append(Violation(
            ANSWERS, name, touching[-1].plan.label if touching else "none",
            f"{len(failures)} message/send answered with a server error ({outcomes}), "
            f"first at {failures[0].sent_at:.1f}s", at))
    return violations


def not_injected(records: Sequence[FaultRecord], at: float,
                 limit: float = MAX_NOT_INJECTED) -> list[Violation]:
    """`injected`: a run in which more than `limit` of the planned faults were not
    injected (skipped) or not as planned (missed) tested less than it claims."""
    bad = [r for r in records if r.injected_at is None or r.missed]
    if not records or len(bad) <= limit * len(records):
        return []
    reasons = "; ".join(sorted({f"{r.plan.kind}: {r.skipped or r.missed}" for r in bad}))
    return [Violation(INJECTED, None, None,
                      f"{len(bad)} of {len(records)} faults not injected as planned "
                      f"(more than {limit:.0%}): {reasons}"[:1000], at)]


def unanswered_wakes(failed: Iterable[Failed], records: Sequence[FaultRecord],
                     end_of_run: float) -> list[Violation]:
    """`answers`: a message to a suspended workspace wakes it and is answered. Every
    message/send to a suspend fault's target sent after the suspension was recorded
    (`lifted_at`: the API answered) and before the fault converged must have been
    acknowledged: a refusal, or no answer within the workload's timeout, is the
    wake failing. (Requests already in flight when the suspension came may fail.)"""
    violations = []
    failures = list(failed)
    for r in records:
        if r.plan.kind != "suspend" or r.lifted_at is None or r.plan.target is None \
                or r.missed:
            continue
        until = r.converged_at if r.converged_at is not None else end_of_run
        refused = sorted((f for f in failures if f.workspace == r.plan.target
                          and r.lifted_at <= f.sent_at <= until), key=lambda f: f.sent_at)
        if refused:
            outcomes = ", ".join(sorted({f.outcome for f in refused}))
            violations.append(Violation(
                ANSWERS, r.plan.target, r.plan.label,
                f"{len(refused)} message/send to the suspended workspace not answered "
                f"({outcomes}), first sent at {refused[0].sent_at:.1f}s: a message must wake "
                "it and be answered", refused[0].sent_at))
    return violations


def _faults_since(records: Sequence[FaultRecord], workspace: str, since: float,
                  end_of_run: float) -> list[FaultRecord]:
    """Faults on `workspace` in effect at or after `since` (the write of a file)."""
    return sorted((r for r in records if r.injected_at is not None and workspace in r.affected
                   and r.window(end_of_run)[1] + ATTRIBUTION_GRACE_SECONDS >= since),
                  key=lambda r: r.plan.index)


def _file_names(files: Sequence[WrittenFile], limit: int = 10) -> str:
    names = ", ".join(f.name for f in files[:limit])
    return names + (f", ... ({len(files) - limit} more)" if len(files) > limit else "")


def lost_files(losses: Iterable[FileLoss], records: Sequence[FaultRecord],
               end_of_run: float) -> list[Violation]:
    """`files`: every acknowledged file is still in the workspace's storage with its
    content. One violation per workspace, naming the files and the faults in effect
    since the first of them was written."""
    violations = []
    for loss in losses:
        if loss.unreadable is not None:
            violations.append(Violation(
                FILES, loss.workspace, fault_names(_faults_since(records, loss.workspace, 0.0,
                                                                 end_of_run)),
                f"{loss.acked} acknowledged file(s) could not be read back: {loss.unreadable}",
                end_of_run))
            continue
        lost = sorted((*loss.missing, *loss.changed), key=lambda f: f.seq)
        if not lost:
            continue
        parts = []
        if loss.missing:
            parts.append(f"{len(loss.missing)} missing ({_file_names(loss.missing)})")
        if loss.changed:
            parts.append(f"{len(loss.changed)} with other content "
                         f"({_file_names(loss.changed)})")
        first, last = lost[0], lost[-1]
        faults = _faults_since(records, loss.workspace, first.sent_at, end_of_run)
        containers = list(dict.fromkeys(f.container[:12] for f in lost))
        where = (f"the first written at {first.sent_at:.1f}s into container "
                 f"{first.container[:12]}")
        if last is not first:
            where += (f", the last at {last.sent_at:.1f}s into {last.container[:12]} "
                      f"({len(containers)} container(s): {', '.join(containers[:5])}"
                      f"{', ...' if len(containers) > 5 else ''})")
        if loss.kept_after is not None:
            kept = loss.kept_after
            where += (f"; {kept.name}, written at {kept.sent_at:.1f}s into "
                      f"{kept.container[:12]}, is intact")
        violations.append(Violation(
            FILES, loss.workspace, fault_names(faults),
            f"of {loss.acked} acknowledged files in {FILES_DIR}: {'; '.join(parts)}; {where}",
            end_of_run))
    return violations
