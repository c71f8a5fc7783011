"""The run's report: JSON, a self-contained HTML page with inline SVG, a terminal summary.

The HTML needs nothing from the network: styles and plots are inline. Two
plots: convergence time per fault type (every fault a dot, p50 and p99 marked)
and a phase timeline per workspace with fault markers.
"""

from __future__ import annotations

import dataclasses
import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from controller.chaos.checks import percentile
from controller.chaos.model import FaultRecord
from controller.chaos.runner import RunResult

PHASE_COLOURS = {"Online": "#3a9d5d", "Provisioning": "#7fb3e6", "Pending": "#c9c9c9",
                 "Degraded": "#e8a33d", "Failed": "#d64545", "Stopped": "#8a8a8a",
                 "Suspended": "#9b7fd1", "Deleted": "#e6e6e6"}


def convergence_stats(records: list[FaultRecord]) -> dict[str, dict[str, Any]]:
    by_kind: dict[str, list[FaultRecord]] = defaultdict(list)
    for r in records:
        by_kind[r.plan.kind].append(r)
    stats = {}
    for kind, rs in sorted(by_kind.items()):
        seconds = [s for r in rs if (s := r.converge_seconds) is not None]
        injected = [r for r in rs if r.injected_at is not None]
        stats[kind] = {
            "count": len(rs), "injected": len(injected), "converged": len(seconds),
            "not_converged": len(injected) - len(seconds),
            "skipped": sum(1 for r in rs if r.injected_at is None),
            "missed": sum(1 for r in rs if r.missed),
            "p50": _r(percentile(seconds, 50)), "p90": _r(percentile(seconds, 90)),
            "p99": _r(percentile(seconds, 99)), "max": _r(max(seconds, default=None)),
            "seconds": [round(s, 3) for s in seconds],
        }
    return stats


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def to_json(result: RunResult, environment: dict[str, Any]) -> dict[str, Any]:
    obs = result.observer
    workload = result.workload
    return {
        "wsctl_chaos_report": 1,
        "verdict": "pass" if result.passed else "fail",
        "started_at": result.started_at,
        "duration_seconds": round(result.duration, 1),
        "config": dataclasses.asdict(result.config),
        "environment": environment,
        "invariants": result.invariants,
        "violations": [v.to_json() for v in result.violations],
        "convergence": convergence_stats(result.records),
        "faults": [r.to_json() for r in result.records],
        "schedule": [p.to_json() for p in result.schedule],
        "workload": {"sent": workload.stats.sent, "acked": workload.stats.acked,
                     "with_activity_row": sum(1 for a in workload.acked.values()
                                              if a.confirmed_at is not None),
                     "missing": len(workload.missing()),
                     "unacknowledged": dict(workload.stats.failures)},
        "files": files_json(result),
        "timeline": {name: [[round(c.at, 2), c.phase, c.reason] for c in obs.phases
                            if c.workspace == name] for name in obs.names},
        "samples": obs.samples,
        "notes": result.notes,
    }


def files_json(result: RunResult) -> dict[str, Any]:
    """The `files` section: writes into the workspaces' storage and what came back."""
    files = result.files
    if files is None or not files.started:
        return {"enabled": False}
    st = files.stats
    return {"enabled": True, "directory": files.directory, "interval": files.interval,
            "written": st.written, "acknowledged": st.acked, "checked": st.checked,
            "missing": st.missing, "changed": st.changed, "unreadable": st.unreadable,
            "not_acknowledged": dict(st.failures),
            "per_workspace": {name: len(acked) for name, acked in files.acked.items()}}


def write(report_dir: Path, data: dict[str, Any]) -> tuple[Path, Path]:
    report_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = report_dir / "report.json", report_dir / "report.html"
    json_path.write_text(json.dumps(data, indent=1))
    html_path.write_text(render_html(data))
    return json_path, html_path


# ------------------------------------------------------------------ terminal


def _source(data: dict[str, Any]) -> str:
    env = data.get("environment") or {}
    commit = env.get("commit")
    if not commit:
        return f"wsctl {env.get('wsctl', '?')}"
    return f"commit {str(commit)[:12]}{' with uncommitted changes' if env.get('dirty') else ''}"


def summary(data: dict[str, Any], html_path: Path | None = None) -> str:
    cfg = data["config"]
    lines = [f"wsctl chaos: {data['verdict'].upper()}  ({cfg['workspaces']} workspaces, "
             f"{cfg['faults']} faults, seed {cfg['seed']}, {data['duration_seconds']:.0f}s; "
             f"{_source(data)})",
             f"{'fault type':<18}{'n':>4}{'conv':>6}{'p50':>8}{'p99':>8}{'max':>8}"]
    for kind, s in data["convergence"].items():
        lines.append(f"{kind:<18}{s['injected']:>4}{s['converged']:>6}{_s(s['p50']):>8}"
                     f"{_s(s['p99']):>8}{_s(s['max']):>8}"
                     + (f"  ({s['skipped']} skipped)" if s["skipped"] else "")
                     + (f"  ({s['missed']} missed)" if s.get("missed") else ""))
    lines.append("invariants: " + ", ".join(f"{k} {v}" for k, v in data["invariants"].items()))
    w = data["workload"]
    failures = ", ".join(f"{k} x{v}" for k, v in sorted(w["unacknowledged"].items()))
    lines.append(f"workload: {w['sent']} sent, {w['acked']} acknowledged, "
                 f"{w['with_activity_row']} with activity row, {w['missing']} missing"
                 + (f" (not acknowledged: {failures})" if failures else ""))
    f = data.get("files") or {}
    if f.get("enabled"):
        not_acked = ", ".join(f"{k} x{v}" for k, v in sorted(f["not_acknowledged"].items()))
        lines.append(f"files: {f['written']} written, {f['acknowledged']} acknowledged, "
                     f"{f['checked']} checked, {f['missing']} missing, {f['changed']} changed"
                     + (f", {f['unreadable']} unreadable" if f["unreadable"] else "")
                     + (f" (not acknowledged: {not_acked})" if not_acked else ""))
    violations = data["violations"]
    lines.append(f"violations: {len(violations)}")
    for v in violations[:12]:
        lines.append(f"  [{v['invariant']}] {v['workspace'] or '-'} / {v['fault'] or '-'}: "
                     f"{v['detail']}"[:200])
    if len(violations) > 12:
        lines.append(f"  ... {len(violations) - 12} more in the report")
    for note in data["notes"]:
        lines.append(f"note: {note}")
    if html_path is not None:
        lines.append(f"report: {html_path}")
    return "\n".join(lines)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


# ------------------------------------------------------------------ HTML


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _ticks(top: float) -> list[float]:
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600):
        if top / step <= 8:
            break
    return [i * step for i in range(int(top / step) + 1)]


def convergence_svg(stats: dict[str, dict[str, Any]]) -> str:
    kinds = [k for k, s in stats.items() if s["seconds"]]
    if not kinds:
        return "<p>No fault converged.</p>"
    left, right, row, top_pad = 130, 200, 34, 24
    width = 900
    plot_w = width - left - right
    top = max(max(stats[k]["seconds"]) for k in kinds) * 1.05 or 1.0
    height = top_pad + row * len(kinds) + 30

    def x(v: float) -> float:
        return left + plot_w * v / top
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="convergence time per fault type">']
    for t in _ticks(top):
        parts.append(f'<line x1="{x(t):.1f}" y1="{top_pad - 6}" x2="{x(t):.1f}" '
                     f'y2="{height - 26}" stroke="#e4e4e4"/>'
                     f'<text x="{x(t):.1f}" y="{height - 10}" font-size="11" '
                     f'text-anchor="middle">{t:g}s</text>')
    for i, kind in enumerate(kinds):
        s = stats[kind]
        cy = top_pad + row * i + row / 2
        parts.append(f'<text x="{left - 8}" y="{cy + 4:.1f}" font-size="12" '
                     f'text-anchor="end">{_e(kind)}</text>')
        for j, v in enumerate(sorted(s["seconds"])):
            jitter = ((j * 7) % 11 - 5) * 1.4  # deterministic spread so dots do not hide
            parts.append(f'<circle cx="{x(v):.1f}" cy="{cy + jitter:.1f}" r="3.2" '
                         f'fill="#3b6fb6" fill-opacity="0.6"><title>{_e(kind)}: {v:.2f}s'
                         f'</title></circle>')
        for q, colour in (("p50", "#222"), ("p99", "#c0392b")):
            if s[q] is not None:
                parts.append(f'<line x1="{x(s[q]):.1f}" y1="{cy - 12:.1f}" x2="{x(s[q]):.1f}" '
                             f'y2="{cy + 12:.1f}" stroke="{colour}" stroke-width="2">'
                             f'<title>{q} {s[q]}s</title></line>')
        parts.append(f'<text x="{width - right + 10}" y="{cy + 4:.1f}" font-size="11">'
                     f'n={len(s["seconds"])} p50 {_s(s["p50"])} p99 {_s(s["p99"])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def timeline_svg(data: dict[str, Any]) -> str:
    timeline: dict[str, list[list[Any]]] = data["timeline"]
    names = list(timeline)
    end = max(float(data["duration_seconds"]), 1.0)
    left, row, top_pad, width = 60, 18, 20, 1100
    plot_w = width - left - 20
    height = top_pad + row * len(names) + 46

    def x(v: float) -> float:
        return left + plot_w * max(0.0, min(v, end)) / end
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="phase timeline per workspace">']
    for t in _ticks(end):
        parts.append(f'<line x1="{x(t):.1f}" y1="{top_pad - 4}" x2="{x(t):.1f}" '
                     f'y2="{height - 40}" stroke="#eee"/><text x="{x(t):.1f}" '
                     f'y="{height - 26}" font-size="10" text-anchor="middle">{t:g}s</text>')
    rows = {name: i for i, name in enumerate(names)}
    for name, changes in timeline.items():
        y = top_pad + row * rows[name]
        parts.append(f'<text x="{left - 6}" y="{y + 12}" font-size="11" '
                     f'text-anchor="end">{_e(name)}</text>')
        for k, (at, phase, reason) in enumerate(changes):
            until = changes[k + 1][0] if k + 1 < len(changes) else end
            colour = PHASE_COLOURS.get(phase, "#999")
            label = f"{phase}{' ' + reason if reason else ''} {at:.1f}s-{until:.1f}s"
            bar = max(x(until) - x(at), 0.8)
            parts.append(f'<rect x="{x(at):.1f}" y="{y + 2}" width="{bar:.1f}" height="{row - 5}" '
                         f'fill="{colour}"><title>{_e(label)}</title></rect>')
    for fault in data["faults"]:
        at = fault["injected_at"]
        if at is None:
            continue
        tip = _e(f"{fault['label']} at {at:.1f}s, converged "
                 f"{_s(fault['converge_seconds'])} after lift")
        colour = "#c0392b" if fault["converged_at"] is None else "#111"
        if fault["target"] is None:
            parts.append(f'<line x1="{x(at):.1f}" y1="{top_pad - 6}" x2="{x(at):.1f}" '
                         f'y2="{height - 40}" stroke="{colour}" stroke-dasharray="3,2">'
                         f'<title>{tip}</title></line>')
            continue
        if fault["target"] not in rows:
            continue
        y = top_pad + row * rows[fault["target"]]
        parts.append(f'<path d="M{x(at):.1f},{y + 1} l-4,-6 h8 z" fill="{colour}">'
                     f'<title>{tip}</title></path>')
    legend_x = left
    for phase, colour in PHASE_COLOURS.items():
        parts.append(f'<rect x="{legend_x}" y="{height - 8}" width="10" height="8" '
                     f'fill="{colour}"/><text x="{legend_x + 13}" y="{height - 1}" '
                     f'font-size="10">{phase}</text>')
        legend_x += 95
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e('' if c is None else c)}</td>" for c in r)
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(data: dict[str, Any]) -> str:
    cfg = data["config"]
    verdict = data["verdict"].upper()
    colour = "#3a9d5d" if data["verdict"] == "pass" else "#d64545"
    invariants = _table(["invariant", "result"], [[k, v] for k, v in data["invariants"].items()])
    violations = _table(["invariant", "workspace", "fault", "at", "detail"],
                        [[v["invariant"], v["workspace"], v["fault"], v["at"], v["detail"]]
                         for v in data["violations"]]) if data["violations"] else "<p>None.</p>"
    stats = _table(["fault type", "injected", "converged", "skipped", "p50 s", "p90 s", "p99 s",
                    "max s"],
                   [[k, s["injected"], s["converged"], s["skipped"], s["p50"], s["p90"], s["p99"],
                     s["max"]] for k, s in data["convergence"].items()])
    faults = _table(["#", "fault", "target", "injected s", "lifted s", "converge s", "seen",
                     "notes"],
                    [[f["index"], f["label"].split(" on ")[0].lstrip("#0123456789 "),
                      f["target"] or "fleet", f["injected_at"], f["lifted_at"],
                      f["converge_seconds"], ", ".join(f["detected"]),
                      "; ".join(filter(None, [f["skipped"], f.get("missed"), f["error"],
                                              *f["notes"]]))]
                     for f in data["faults"]])
    w = data["workload"]
    f = data.get("files") or {}
    files = (f"<p>{f['written']} numbered files written into the workspaces' storage "
             f"({_e(f['directory'])}, one per workspace every {f['interval']}s), "
             f"{f['acknowledged']} acknowledged (exec exited 0), {f['checked']} read back at "
             f"the end: {f['missing']} missing, {f['changed']} with other content, "
             f"{f['unreadable']} unreadable; not acknowledged: "
             f"{_e(f['not_acknowledged'])}.</p>") if f.get("enabled") else \
        "<p>No files written.</p>"
    notes = "".join(f"<li>{_e(n)}</li>" for n in data["notes"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>wsctl chaos report: {verdict}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
h1 span {{ color: {colour}; }}
table {{ border-collapse: collapse; margin: 8px 0 20px; }}
th, td {{ border: 1px solid #ddd; padding: 3px 8px; text-align: left; font-size: 13px; }}
th {{ background: #f4f4f4; }}
svg {{ display: block; margin: 8px 0 24px; }}
</style></head><body>
<h1>wsctl chaos: <span>{verdict}</span></h1>
<p>{cfg['workspaces']} workspaces, {cfg['faults']} faults, seed {cfg['seed']}, rate
{cfg['rate']}/s, settle {cfg['settle']}s; started {_e(data['started_at'])}, took
{data['duration_seconds']}s; {data['samples']} probe samples; {_e(_source(data))}.</p>
<h2>Invariants</h2>{invariants}
<h2>Violations</h2>{violations}
<h2>Time to converge per fault type</h2>
<p>From the moment the fault was lifted to the first sample with the workspace Online on one
container with the current config hash. Black bar p50, red bar p99.</p>
{convergence_svg(data['convergence'])}{stats}
<h2>Phases per workspace</h2>
<p>Triangles: faults on one workspace; dashed lines: fleet faults; red: did not converge.</p>
{timeline_svg(data)}
<h2>Workload</h2>
<p>{w['sent']} message/send sent, {w['acked']} acknowledged, {w['with_activity_row']} found in
the activity log, {w['missing']} missing; not acknowledged: {_e(w['unacknowledged'])}.</p>
<h2>Files</h2>
{files}
<h2>Faults</h2>{faults}
{f'<h2>Notes</h2><ul>{notes}</ul>' if notes else ''}
</body></html>
"""
