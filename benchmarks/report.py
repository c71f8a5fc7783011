"""Markdown table and PNG plots for benchmark results."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _ok(value: float, goal: float, below: bool = True) -> str:
    met = value <= goal if below else value >= goal
    return "met" if met else "MISSED"


def table(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Docker {m['docker']}, "
        f"Python {m['python']}; parallelism {results['parallelism']}; "
        f"run {results['when']} in {results['duration_seconds']:.0f} s"
        + (" (quick: sizes too small for the goals to mean anything)" if results["quick"]
           else ""),
        "",
        "| measure | wsctl | baseline | ratio | goal | |",
        "|---|---|---|---|---|---|",
    ]
    rc = results["recreate"]
    lines.append(
        f"| recreate, median of {rc['controller']['n']} (request -> new container started) | "
        f"{rc['controller']['median']:.3f} s | raw docker-py {rc['raw']['median']:.3f} s | "
        f"{rc['ratio_median']:.2f} | <= 1.10 | {_ok(rc['ratio_median'], 1.10)} |")
    lines.append(
        f"| recreate, p95 | {rc['controller']['p95']:.3f} s | {rc['raw']['p95']:.3f} s | "
        f"{rc['ratio_p95']:.2f} | | |")
    for s in results["scale"]:
        trials = len((s.get("trials") or {}).get("controller") or [1])
        lines.append(
            f"| bring-up N={s['n']} (all started), median of {trials} | "
            f"{s['controller_seconds']:.2f} s | raw {s['raw_seconds']:.2f} s | "
            f"{s['ratio_raw']:.2f} | <= 1.10 | {_ok(s['ratio_raw'], 1.10)} |")
        if "controller_p95" in s:
            lines.append(
                f"| bring-up N={s['n']}, p95 | {s['controller_p95']:.2f} s | "
                f"raw {s['raw_p95']:.2f} s | {s['ratio_raw_p95']:.2f} | | |")
        if s["compose_seconds"] is None:
            lines.append(
                f"| bring-up N={s['n']} vs compose | {s['controller_seconds']:.2f} s | "
                f"docker-compose did not finish in 300 s ({s['compose_running']}/{s['n']} "
                f"running) | - | < 1.00 | met |")
        else:
            lines.append(
                f"| bring-up N={s['n']} vs compose | {s['controller_seconds']:.2f} s | "
                f"docker-compose {s['compose_seconds']:.2f} s | {s['ratio_compose']:.2f} | "
                f"< 1.00 | {_ok(s['ratio_compose'], 0.999)} |")
        lines.append(f"| time to Online N={s['n']} | {s['online_seconds']:.2f} s | | | | |")
    steady = results["scale"][-1].get("steady")
    if steady is not None:
        n = results["scale"][-1]["n"]
        lines += [
            f"| Docker API calls per resync, N={n} in sync | {steady['docker_calls_per_pass']:.1f}"
            f" | | | 1 | {_ok(steady['docker_calls_per_pass'], 1.0)} |",
            f"| SQL statements per resync, N={n} | {steady['db_queries_per_pass']:.0f} "
            f"({steady['db_queries_per_workspace_per_pass']:.1f}/workspace) | | | | |",
            f"| controller CPU per resync, N={n} | {steady['cpu_seconds_per_pass'] * 1000:.0f} ms"
            " | | | | |",
            f"| controller RSS per workspace, N={n} | {steady['rss_per_workspace_mib']:.3f} MiB | "
            f"| | < 0.5 MiB | {_ok(steady['rss_per_workspace_mib'], 0.5)} |",
        ]
    r = results["reaction"]["reaction"]
    floor = results["docker_start"]
    lines += [
        f"| reaction: docker kill -> replacement started, p50 / p99 of {r['n']} | "
        f"{r['median']:.3f} / {r['p99']:.3f} s | Docker create+start {floor['median']:.3f} s | "
        f"p99 - floor = {r['p99'] - floor['median']:.3f} s | < 1 s | "
        f"{_ok(r['p99'] - floor['median'], 1.0)} |",
    ]
    return "\n".join(lines) + "\n"


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plots(results: dict[str, Any], out: Path, suffix: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    scale = results["scale"]

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("controller_seconds", "wsctl"), ("raw_seconds", "raw docker-py"),
                       ("compose_seconds", "docker-compose up -d")):
        points = [(s["n"], s[key] / s["n"] * 1000) for s in scale if s[key] is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("workspaces (N)")
    ax.set_ylabel("bring-up time per workspace (ms)")
    ax.set_title("Cold bring-up cost per workspace")
    ax.legend()
    ax.grid(alpha=0.3)
    written.append(_save(plt, fig, out / f"bringup{suffix}.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    steady = [s for s in scale if "steady" in s]
    ax.plot([s["n"] for s in steady],
            [s["steady"]["cpu_seconds_per_pass"] / s["n"] * 1000 for s in steady],
            marker="o", label="controller CPU per workspace per resync (ms)")
    ax.plot([s["n"] for s in steady],
            [s["steady"]["db_queries_per_workspace_per_pass"] for s in steady],
            marker="s", label="SQL statements per workspace per resync")
    ax.plot([s["n"] for s in steady], [s["steady"]["docker_calls_per_pass"] for s in steady],
            marker="^", label="Docker API calls per resync (whole fleet)")
    ax.set_xscale("log")
    ax.set_xlabel("workspaces (N)")
    ax.set_title("Resync cost of an in-sync fleet")
    ax.legend()
    ax.grid(alpha=0.3)
    written.append(_save(plt, fig, out / f"resync{suffix}.png"))

    rc = results["recreate"]
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = ["recreate median", "recreate p95"]
    wsctl = [rc["controller"]["median"], rc["controller"]["p95"]]
    raw = [rc["raw"]["median"], rc["raw"]["p95"]]
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], wsctl, width=0.4, label="wsctl")
    ax.bar([x + 0.2 for x in xs], raw, width=0.4, label="raw docker-py")
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("seconds")
    ax.set_title("Recreate: request -> new container started")
    ax.legend()
    written.append(_save(plt, fig, out / f"recreate{suffix}.png"))
    return written


def write_report(results: dict[str, Any], out: Path, quick: bool) -> str:
    suffix = "-quick" if quick else ""
    text = table(results)
    names = [p.name for p in plots(results, out, suffix)]
    body = "# wsctl benchmark results\n\n" + text + "\n" + "".join(
        f"![{n}]({n})\n" for n in names)
    (out / f"results{suffix}.md").write_text(body)
    return text
