"""One chaos run: fleet up, traffic on, faults in schedule order, settle, verdict.

Faults on different workspaces overlap; a fault waits for the previous fault on
its workspace to converge (or time out), and a fleet fault (controller,
database, engine) waits for every other fault and runs alone. Convergence time
is measured from the moment the cause is gone (`lifted_at`) to the first
sample where the workspace is back in the state docs/design.md section 8.1
demands (on a new container, for faults that destroy the old one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from controller.chaos import checks
from controller.chaos.api import ApiError
from controller.chaos.environment import SECRET_KEY, SECRET_NAME, Environment, SetupError
from controller.chaos.faults import FAULTS, FaultContext, FaultSkipped, available
from controller.chaos.files import FileWriter
from controller.chaos.model import (
    ACTIVITY,
    CONVERGE,
    FILES,
    INVARIANTS,
    ISOLATION,
    ONE_CONTAINER,
    SECRETS,
    SERVES,
    TOKENS,
    FaultPlan,
    FaultRecord,
    RunClock,
    Violation,
)
from controller.chaos.probes import Observer
from controller.chaos.schedule import make_schedule
from controller.chaos.tokens import TokenLedger, TokenProbe
from controller.chaos.workload import Workload
from controller.core import redact
from controller.core.errors import WsctlError

Say = Callable[[str], None]


@dataclass
class RunConfig:
    """The shape of a run; every field is a `wsctl chaos run` flag."""

    workspaces: int = 5
    faults: int = 30
    seed: int = 1
    rate: float = 0.5
    """Mean faults per second (exponential gaps); faults also wait for their target."""
    settle: float = 120.0
    """After the last fault: how long the fleet may take to converge before the verdict."""
    fault_timeout: float = 120.0
    """How long one fault may take to converge after it was lifted."""
    fleet_timeout: float = 240.0
    """How long the fleet may take to come up before the first fault."""
    only: list[str] | None = None
    """Fault types to draw from (default: every type this run can inject)."""
    workload_interval: float = 1.0
    """Seconds between two message/send to one workspace."""
    token_expiration: int | None = None
    """spec.tokenExpirationSeconds of every workspace: tokens are refreshed in place
    throughout the run, faults included."""
    files_interval: float | None = 3.0
    """Seconds between two numbered files written into one workspace's storage (the
    `files` invariant); None: no files are written, `files` is skipped."""


@dataclass
class RunResult:
    config: RunConfig
    schedule: list[FaultPlan]
    records: list[FaultRecord]
    violations: list[Violation]
    observer: Observer
    workload: Workload
    duration: float
    invariants: dict[str, str]
    notes: list[str] = field(default_factory=list)
    started_at: str = ""
    files: FileWriter | None = None

    @property
    def passed(self) -> bool:
        return not self.violations


def workspace_names(count: int) -> list[str]:
    return [f"w{i:02d}" for i in range(1, count + 1)]


def manifest(name: str, namespace: str, llm_base_url: str,
             token_expiration: int | None = None) -> dict[str, Any]:
    spec_extra = {} if token_expiration is None else {"tokenExpirationSeconds": token_expiration}
    return {
        "apiVersion": "wsctl.dev/v1alpha1", "kind": "Workspace",
        "metadata": {"name": name, "namespace": namespace, "labels": {"wsctl.dev/chaos": "true"}},
        "spec": {
            "model": "MiniMax-M3",
            "llm": {"provider": "minimax", "baseURL": llm_base_url,
                    "apiKey": {"secretRef": {"name": SECRET_NAME, "key": SECRET_KEY}}},
            "resources": {"memory": "128Mi", "cpus": "0.5"},
            "startupTimeoutSeconds": 60,
            **spec_extra,
        },
    }


def plan_for(env: Environment, config: RunConfig) -> list[FaultPlan]:
    faults = available(env.capabilities, config.only)
    return make_schedule(config.seed, config.faults, workspace_names(config.workspaces),
                         faults, config.rate)


class Run:
    def __init__(self, env: Environment, config: RunConfig, say: Say) -> None:
        self.env = env
        self.config = config
        self.say = say
        self.clock = RunClock()
        self.names = workspace_names(config.workspaces)
        self.manifests = {n: manifest(n, env.namespace, env.llm_base_url,
                                      config.token_expiration) for n in self.names}
        self.schedule = plan_for(env, config)
        self.observer = Observer(env.api, env.engine, env.blocking, self.clock, self.names,
                                 env.namespace)
        run_id = secrets.token_hex(3)
        self.workload = Workload(env.api, self.clock, self.names, run_id,
                                 interval=config.workload_interval)
        self.files = FileWriter(
            partial(env.blocking, env.engine.write_file),
            partial(env.blocking, env.engine.file_digests), self._running_container,
            self.clock.now, self.names, run_id, interval=config.files_interval or 1.0)
        self.records: list[FaultRecord] = []
        self.violations: list[Violation] = []
        self.healed_in_place = 0
        """Token faults a refresh healed on the same container (--token-expiration)."""
        self.tokens = TokenProbe(
            TokenLedger(config.token_expiration), self.names, mine=self.observer.mine,
            converged=self.observer.converged, workspace_id=self.observer.workspace_id,
            read=partial(env.blocking, env.engine.read_token),
            present=partial(env.api.heartbeat, env.registry or ""), now=self.clock.now,
            violate=lambda name, detail: self._violate(TOKENS, name, self._last_fault(name),
                                                       detail),
            on_token=redact.remember_token, containers=partial(env.blocking, env.engine.containers))
        self.notes = list(env.notes)
        self.ctx = FaultContext(
            engine=env.engine, api=env.api, namespace=env.namespace, network=env.network,
            heartbeat_ttl=3 * env.heartbeat_seconds, manifests=self.manifests,
            clock=self.clock.now, wait_reason=self.observer.wait_reason,
            run_blocking=env.blocking, controller=env.controller,
            restart_postgres=env.restart_postgres if env.data_dir else None,
            restart_docker=env.restart_docker, deleted=self._deleted,
            egress_port=env.controller.egress_port if env.controller else None)

    # ------------------------------------------------------------ the run

    async def execute(self) -> RunResult:
        stop = asyncio.Event()
        sampler = asyncio.create_task(self.observer.run(stop), name="chaos-observer")
        ticker = asyncio.create_task(self._tick(stop), name="chaos-progress")
        probing = asyncio.Event()
        prober = asyncio.create_task(self._probe_tokens(probing), name="chaos-tokens")
        try:
            if await self._fleet_up():
                self.workload.start()
                if self.config.files_interval is not None:
                    self.files.start()
                await self._faults()
                self.say(f"all faults done; settling (up to {self.config.settle:.0f}s)")
                settled = await self.observer.wait(self._fleet_converged, self.config.settle)
                self.say("fleet converged" if settled else "fleet did not converge in time")
            await self.workload.stop()
            await self.files.stop()
            probing.set()
            await prober
            await self._final_checks()
        finally:
            stop.set()
            probing.set()
            for task in (sampler, ticker, prober):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.workload.stop()
            await self.files.stop()
        return RunResult(self.config, self.schedule, self.records, self.violations,
                         self.observer, self.workload, self.clock.now(), self._invariants(),
                         self.notes, self.clock.started.isoformat(), self.files)

    def _running_container(self, name: str) -> str | None:
        """The workspace's running container as last sampled: the one its status
        names, else the newest generation running."""
        running = [c for c in self.observer.mine(name) if c.state == "running"]
        current = ((self.observer.latest.get(name) or {}).get("status") or {}).get("containerID")
        for c in running:
            if c.id == current:
                return c.id
        return max(running, key=lambda c: c.token_generation).id if running else None

    def _deleted(self, name: str) -> None:
        """A delete-reapply fault deleted the workspace and is about to apply it again:
        its tokens so far were purged with it (each must now be refused), and the
        workspace applied again counts generations from 1 anew."""
        self.tokens.ledger.deleted(name)

    def _fleet_converged(self) -> bool:
        return all(self.observer.converged(n) for n in self.names)

    async def _fleet_up(self) -> bool:
        self.say(f"applying {len(self.names)} workspaces in namespace {self.env.namespace}")
        await self.env.api.apply(list(self.manifests.values()))
        if not await self.observer.wait(self._fleet_converged, self.config.fleet_timeout):
            for name in self.names:
                problems = self.observer.problems(name)
                if problems:
                    self._violate(CONVERGE, name, None,
                                  f"never came up: {'; '.join(problems)}")
            return False
        for name in self.names:
            status = self.observer.latest[name].get("status") or {}
            self.observer.expected_hash[name] = str(status.get("configHash"))
        await self.tokens.read_tokens(self.names)
        self.say(f"fleet up in {self.clock.now():.1f}s")
        return True

    async def _faults(self) -> None:
        running: dict[str, asyncio.Task[None]] = {}
        for plan in self.schedule:
            await asyncio.sleep(plan.delay)  # the schedule's pacing (--rate)
            fault = FAULTS[plan.kind]
            if fault.scope == "fleet":
                await asyncio.gather(*running.values())
                running.clear()
                await self._one(plan)
                continue
            assert plan.target is not None
            if plan.target in running:
                await running.pop(plan.target)
            running[plan.target] = asyncio.create_task(self._one(plan))
        await asyncio.gather(*running.values())

    async def _one(self, plan: FaultPlan) -> None:
        fault = FAULTS[plan.kind]
        affected = tuple(self.names) if fault.scope == "fleet" else (plan.target or "",)
        record = FaultRecord(plan, affected, fault.causes(plan), fault.must_cause)
        self.records.append(record)
        self.observer.records = self.records
        self.say(f"{plan.label}: injecting")
        try:
            await fault.inject(self.ctx, plan, record)
        except FaultSkipped as exc:
            record.skipped = str(exc)
        except SetupError:
            raise  # the controller could not be started again: nothing left to test
        except Exception as exc:  # a fault that half-happened is still waited for
            record.error = f"{type(exc).__name__}: {exc}"
        if record.injected_at is None:
            record.skipped = record.skipped or record.error or "not injected"
            self.say(f"{plan.label}: skipped ({record.skipped})")
            return
        if record.lifted_at is None:
            record.lifted_at = self.clock.now()
        replaced = fault.replaced(plan)
        # With expiring tokens the controller rewrites the token file at each refresh:
        # one that lands between the fault's delete and the agent's next read heals
        # the workspace in place (the agent reads a live token), which is no failure.
        healed_by_refresh = plan.kind == "token" and self.config.token_expiration is not None
        may_stay = healed_by_refresh or fault.may_stay
        lifted = record.lifted_at

        def stayed() -> bool:
            return replaced is not None and any(c.id == record.before_container
                                                for c in self.observer.mine(replaced))

        def done() -> bool:
            if not all(self.observer.converged(n) for n in affected):
                return False
            return replaced is None or record.before_container is None or not stayed() \
                or (may_stay and self.clock.now() - lifted >= 5.0)

        if await self.observer.wait(done, self.config.fault_timeout):
            record.converged_at = self.clock.now()
            kept = stayed()  # once: the observer samples meanwhile
            if kept and healed_by_refresh:
                self.healed_in_place += 1
            if kept and not healed_by_refresh:
                try:
                    why = await fault.stayed(self.ctx, plan, record)
                except Exception:  # an unknown answer does not prove the container right
                    why = None
                if why is None:
                    self._violate(CONVERGE, replaced, plan.label, "converged on the container "
                                  f"it had ({str(record.before_container)[:12]}), which the "
                                  "fault should have replaced")
                    return
                record.notes.append(why)
                self.say(f"{plan.label}: converged in place ({why})")
            else:
                self.say(f"{plan.label}: converged in {record.converge_seconds:.1f}s")
            await self.tokens.read_tokens(affected)
            return
        for name in affected:
            problems = self.observer.problems(name)
            if name == replaced and not problems:
                problems = [f"still on container {str(record.before_container)[:12]}"]
            if problems:
                self._violate(CONVERGE, name, plan.label,
                              f"not converged {self.config.fault_timeout:.0f}s after the "
                              f"fault was lifted: {'; '.join(problems)}")

    def _violate(self, invariant: str, workspace: str | None, fault: str | None,
                 detail: str) -> None:
        violation = Violation(invariant, workspace, fault, detail, self.clock.now())
        self.violations.append(violation)
        self.say("VIOLATION " + violation.line())

    async def _probe_tokens(self, stop: asyncio.Event) -> None:
        if self.env.registry is not None:
            await self.tokens.run(stop)

    async def _tick(self, stop: asyncio.Event) -> None:
        last_verify = 0.0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5.0)  # progress line period
            injected = sum(1 for r in self.records if r.injected_at is not None)
            converged = sum(1 for r in self.records if r.converged_at is not None)
            up = sum(1 for n in self.names if self.observer.converged(n))
            w = self.workload.stats
            self.say(f"faults {injected}/{len(self.schedule)} injected, {converged} converged | "
                     f"workspaces {up}/{len(self.names)} converged | requests {w.sent} sent, "
                     f"{w.acked} acked | violations "
                     f"{len(self.violations) + len(self.observer.violations)}")
            if self.clock.now() - last_verify > 15:
                last_verify = self.clock.now()
                await self.workload.verify()

    # ------------------------------------------------------------ verdict

    def _last_fault(self, name: str) -> str:
        touching = [r for r in self.records if name in r.affected and r.injected_at is not None]
        return touching[-1].plan.label if touching else "none"

    async def _final_checks(self) -> None:
        end = self.clock.now()
        self.say("final probes")
        with contextlib.suppress(Exception):
            await self.observer.sample()
            await self.observer.collect_events()
        for name in self.names:  # 8.1
            problems = self.observer.problems(name)
            if problems and not any(v.invariant == CONVERGE and v.workspace == name
                                    and v.fault is None for v in self.violations):
                self._violate(ONE_CONTAINER, name, self._last_fault(name), "; ".join(problems))
        await self._check_orphans()
        await self._check_serving(end)
        self._check_answers()
        self._check_injected()
        await self._check_tokens()  # 8.2
        if self.config.token_expiration is not None:
            await self._note_token_refreshes()
            if self.healed_in_place:
                self.notes.append(
                    f"{self.healed_in_place} token fault(s) were healed in place: a token "
                    "refresh rewrote the deleted or corrupted file before the agent read it, "
                    "and the workspace stayed Ready on the same container")
        await self._check_activity()  # 8.3
        await self._check_files()
        await self._check_secrets()  # 8.4
        self._check_isolation()  # 8.7
        seen = self.observer.degraded + self.observer.event_degraded()  # 8.5
        for violation in checks.attribute(seen, self.records, end) + checks.unreported(
                self.records):
            self._violate(violation.invariant, violation.workspace, violation.fault,
                          violation.detail)
        for violation in self.observer.violations:  # continuous probes
            self.violations.append(violation)
            self.say("VIOLATION " + violation.line())
        if self.observer.trailing_list:
            self.notes.append(f"{self.observer.trailing_list} sample(s) listed two running "
                              "containers for a workspace where inspect found one already "
                              "stopped (Docker's list trails); not counted as violations")

    def _check_injected(self) -> None:
        for violation in checks.not_injected(self.records, self.clock.now()):
            self.violations.append(violation)
            self.say("VIOLATION " + violation.line())

    def _check_answers(self) -> None:
        """The controller never fails a request itself: during a database or engine
        fault it answers 503 with Retry-After, never a 500."""
        now = self.clock.now()
        for violation in checks.server_errors(self.workload.failed, self.records, now) \
                + checks.unanswered_wakes(self.workload.failed, self.records, now):
            self.violations.append(violation)
            self.say("VIOLATION " + violation.line())

    async def _check_serving(self, end: float) -> None:
        """Ready must mean reachable: no request fails while no fault is in effect, and
        every converged workspace answers one last message/send."""
        quiet: dict[str, list[Any]] = defaultdict(list)
        for f in self.workload.failed:
            if not checks.active(self.records, f.workspace, f.sent_at, end) and not \
                    checks.active(self.records, f.workspace, f.done_at, end):
                quiet[f.workspace].append(f)
        for name, failures in sorted(quiet.items()):
            outcomes = ", ".join(sorted({f.outcome for f in failures}))
            self._violate(SERVES, name, "none",
                          f"{len(failures)} message/send failed ({outcomes}) while no fault "
                          f"was in effect, first at {failures[0].sent_at:.1f}s")
        for name in self.names:
            if not self.observer.converged(name):
                continue
            status, answer = await self.env.api.message_send(
                name, f"chaos-final-{name}", "final probe", 15.0)
            if status != 200 or not isinstance(answer, dict) or "result" not in answer:
                self._violate(SERVES, name, self._last_fault(name),
                              f"Online, but message/send answered HTTP {status or 'nothing'} "
                              f"{str(answer)[:120]}")

    async def _check_orphans(self) -> None:
        try:
            known = {f"{i['metadata'].get('namespace', 'default')}.{i['metadata']['name']}"
                     for i in await self.env.api.workspaces(all_namespaces=True)}
        except ApiError as exc:
            self.notes.append(f"orphan check skipped: {exc}")
            return
        containers = await self.env.blocking(self.env.engine.containers)
        for c in checks.orphans(containers, known):
            self._violate(ONE_CONTAINER, c.workspace_id, None,
                          f"container {c.name} ({c.state}) is labelled for a workspace that "
                          "does not exist")

    async def _check_tokens(self) -> None:
        """8.2: each workspace's live token is accepted; every replaced generation and
        every expired refreshed token the run read is refused (tokens.TokenProbe)."""
        if self.env.registry is not None:
            self.notes += await self.tokens.final(self.say)

    async def _note_token_refreshes(self) -> None:
        """How many in-place refreshes the (last) controller process made: expiring
        tokens that were not refreshed would show as HeartbeatStale without a fault."""
        status, text = await self.env.api.call("GET", "/metrics")
        found = re.search(r"^wsctl_token_refreshes_total ([0-9.eE+]+)$", text or "", re.M) \
            if status == 200 and isinstance(text, str) else None
        self.notes.append(
            f"tokens expire after {self.config.token_expiration}s: "
            + (f"{int(float(found.group(1)))} refreshed in place by the current controller "
               "process" if found else f"refresh count unavailable (/metrics: HTTP {status})"))

    async def _check_activity(self) -> None:
        for _ in range(3):  # the controller may just be restarting
            await self.workload.verify()
            if not self.workload.missing():
                return
        by_workspace: dict[str, list[Any]] = defaultdict(list)
        for acked in self.workload.missing():
            by_workspace[acked.workspace].append(acked)
        for name, missing in sorted(by_workspace.items()):
            faults = {f.plan.label for a in missing
                      for f in checks.active(self.records, name, a.acked_at, self.clock.now())}
            ids = ", ".join(a.request_id for a in missing[:3])
            self._violate(ACTIVITY, name, ", ".join(sorted(faults)) or "none",
                          f"{len(missing)} acknowledged message/send without an activity "
                          f"row (e.g. {ids})")

    async def _check_files(self) -> None:
        """Every acknowledged file is in the workspace's storage with its content."""
        if not self.files.started:
            return
        losses = await self.files.verify()
        for violation in checks.lost_files(losses, self.records, self.clock.now()):
            self.violations.append(violation)
            self.say("VIOLATION " + violation.line())
        if not self.files.stats.acked:
            self._violate(FILES, None, None,
                          f"none of {self.files.stats.written} writes into the workspaces' "
                          f"storage was acknowledged ({dict(self.files.stats.failures)})")

    async def _check_secrets(self) -> None:
        texts = dict(self.env.log_texts())
        for name in self.names:
            try:
                texts[f"describe {name}"] = json.dumps(await self.env.api.describe(name))
            except ApiError as exc:
                self.notes.append(f"secret scan: describe {name} failed: {exc}")
        with contextlib.suppress(ApiError):
            texts["workspace list"] = json.dumps(await self.env.api.workspaces())
        # The LLM gateway keeps the provider key out of the containers: what `docker
        # inspect` shows of every container of the fleet must not hold it either.
        for name in self.names:
            for c in self.observer.mine(name):
                try:
                    env = await self.ctx.docker(self.env.engine.environment, c.id)
                except WsctlError:  # the engine adapter's error: removed since the last look
                    continue
                texts[f"the environment of {name}'s container {c.id[:12]}"] = "\n".join(env)
        planted = dict(self.env.planted)
        for seen in self.tokens.ledger.all():
            planted[f"agent token {seen.label}"] = seen.token
        for where, which in checks.find_secrets(texts, planted):
            workspace = which.split()[2] if which.startswith("agent token") else None
            self._violate(SECRETS, workspace, None, f"{which} appears in {where}")

    def _check_isolation(self) -> None:
        for record in self.records:
            for breach in record.breaches:
                self._violate(ISOLATION, record.plan.target, record.plan.label, breach)

    def _invariants(self) -> dict[str, str]:
        failed = {v.invariant for v in self.violations}
        verdict = {name: "fail" if name in failed else "pass" for name in INVARIANTS}
        if self.env.registry is None and TOKENS not in failed:
            verdict[TOKENS] = "skipped"
        if self.config.files_interval is None:
            verdict[FILES] = "skipped"
        if ISOLATION not in failed and not any(
                r.plan.kind == "lateral" and r.injected_at is not None for r in self.records):
            verdict[ISOLATION] = "skipped"
        return verdict


async def run_chaos(env: Environment, config: RunConfig, say: Say) -> RunResult:
    run = Run(env, config, say)
    return await run.execute()


def write_schedule(path: Path, schedule: list[FaultPlan]) -> None:
    path.write_text(json.dumps([p.to_json() for p in schedule], indent=1))
