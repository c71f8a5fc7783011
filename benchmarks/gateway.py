"""The LLM gateway's added latency (issue 15's performance acceptance), same run.

A fast fake Anthropic-style provider (its own process, on the fleet network's gateway
address) is called two ways, interleaved call by call so machine noise hits both:

- direct: `POST http://<network gateway>:<port>/anthropic/v1/messages` with the real key;
- through the gateway: the URL a gateway-mode workspace container calls
  (`ANTHROPIC_BASE_URL` + `/v1/messages`, host.docker.internal being the network
  gateway address) with the container's own credential, read from `docker inspect`.
  The gateway authenticates it, resolves the real key, forwards to the workspace's
  `spec.llm.baseURL` (the fake provider) and streams the answer back.

Three measures: a small non-streamed message (latency per call), a short SSE stream
(time to its first body chunk) and many concurrent paced streams (every stream
completes; the longest silence between two chunks at the client; wall time against
the same streams sent direct). Each side has one keep-alive ClientSession, warmed up
before the clock runs, so connection set-up is not what is measured.

    python -m benchmarks.bench --only gateway --quick --out /tmp/gwbench

The fake provider is this module run as a program (`--upstream HOST PORT`, the key in
WSCTL_BENCH_UPSTREAM_KEY): in a process of its own it shares no GIL with the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from benchmarks.fleet import KEY, Fleet
from controller.testing.harness import REPO, ControllerProcess, free_port, phase, wait_for

GOAL_MS = 5.0
"""Issue 15: the gateway adds under 5 ms at p99."""
OPENSANDBOX_MS = 290.0
"""OpenSandbox's egress proxy, as its documentation states it (per request)."""
UPSTREAM_PATH = "/anthropic/v1/messages"
KEY_ENV = "WSCTL_BENCH_UPSTREAM_KEY"
WORKSPACE = "gwb"
INSTANCE = "bench-gw"
STALL_FACTOR = 10
"""A stream stalls when the client hears nothing for STALL_FACTOR event spacings."""


@dataclass(frozen=True)
class Sizes:
    calls: int
    """Non-streamed calls per side."""
    streams: int
    """Streamed calls per side (time to first byte)."""
    concurrent: int
    """Streams at once, per side, per round."""
    rounds: int
    """Timed rounds of the concurrent streams per side (after one untimed warm-up)."""
    warmup: int = 50
    events: int = 10
    gap_ms: float = 20.0


FULL = Sizes(calls=2000, streams=500, concurrent=200, rounds=5)
QUICK = Sizes(calls=200, streams=50, concurrent=50, rounds=2, warmup=20)


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile, as benchmarks.bench.pct."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def stats_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1e3 for s in seconds]
    if not ms:  # every call failed: nan, which no goal is met by
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"),
                "max": float("nan"), "mean": float("nan"), "n": 0}
    return {"p50": pct(ms, 50), "p90": pct(ms, 90), "p99": pct(ms, 99), "max": max(ms),
            "mean": statistics.fmean(ms), "n": len(ms)}


# ---------------------------------------------------------------- the fake provider


def upstream_app(key: str) -> web.Application:
    """Anthropic's Messages API at UPSTREAM_PATH, Bearer key (as MiniMax's). A JSON
    message with `usage`, or for `"stream": true` an SSE stream: message_start (usage),
    content_block_start, `bench.events` content_block_delta events each `bench.gap_ms`
    after the one before (the first is immediate: the first byte is not held back),
    content_block_stop, message_delta (usage), message_stop."""
    expected = f"Bearer {key}"
    message = json.dumps({
        "id": "msg_bench", "type": "message", "role": "assistant", "model": "bench",
        "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
        "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 3,
                                         "cache_creation_input_tokens": 0,
                                         "cache_read_input_tokens": 0}}).encode()

    def sse(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    start = sse("message_start", {"type": "message_start", "message": {
        "id": "msg_bench", "type": "message", "role": "assistant", "content": [],
        "model": "bench", "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 1}}}) + sse(
        "content_block_start", {"type": "content_block_start", "index": 0,
                                "content_block": {"type": "text", "text": ""}})
    delta = sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": "tok "}})
    end = (sse("content_block_stop", {"type": "content_block_stop", "index": 0})
           + sse("message_delta", {"type": "message_delta",
                                   "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                   "usage": {"output_tokens": 10}})
           + sse("message_stop", {"type": "message_stop"}))

    async def messages(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != expected or "x-api-key" in request.headers:
            return web.json_response({"type": "error", "error": {
                "type": "authentication_error", "message": "invalid api key"}}, status=401)
        payload = json.loads(await request.read())
        if not payload.get("stream"):
            return web.Response(body=message, content_type="application/json")
        pace = payload.get("bench") or {}
        events, gap = int(pace.get("events", 3)), float(pace.get("gap_ms", 0)) / 1e3
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        await response.write(start)
        for i in range(events):
            if gap and i:
                await asyncio.sleep(gap)
            await response.write(delta)
        await response.write(end)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post(UPSTREAM_PATH, messages)
    return app


class Upstream:
    """The fake provider in a process of its own."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{UPSTREAM_PATH}"

    def start(self) -> Upstream:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.gateway", "--upstream", self.host,
             str(self.port)], cwd=REPO, env={**os.environ, KEY_ENV: KEY},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        wait_for(self._listening, 30, f"fake provider on {self.host}:{self.port}")
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"fake provider exited {self.proc.returncode}")
        with socket.socket() as sock:
            return sock.connect_ex((self.host, self.port)) == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# ---------------------------------------------------------------- the client


@dataclass
class Side:
    name: str
    url: str
    token: str
    session: aiohttp.ClientSession | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "anthropic-version": "2023-06-01",
                "Content-Type": "application/json"}

    def http(self) -> aiohttp.ClientSession:
        assert self.session is not None
        return self.session


def body(stream: bool, events: int = 3, gap_ms: float = 0.0) -> bytes:
    payload: dict[str, Any] = {"model": "bench", "max_tokens": 16,
                               "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        payload.update(stream=True, bench={"events": events, "gap_ms": gap_ms})
    return json.dumps(payload).encode()


class Failed(Exception):
    pass


async def call(side: Side, data: bytes, headers: dict[str, str]) -> float:
    """One non-streamed message: seconds from the request to the whole answer read."""
    started = time.perf_counter()
    async with side.http().post(side.url, data=data, headers=headers) as response:
        answer = await response.read()
        elapsed = time.perf_counter() - started
    if response.status != 200 or b'"usage"' not in answer:
        raise Failed(f"{side.name}: {response.status} {answer[:200]!r}")
    return elapsed


async def first_byte(side: Side, data: bytes, headers: dict[str, str]) -> float:
    """One short stream: seconds from the request to its first body chunk (the stream
    is then read to its end, so the connection goes back to the pool)."""
    started = time.perf_counter()
    async with side.http().post(side.url, data=data, headers=headers) as response:
        first = await response.content.readany()
        elapsed = time.perf_counter() - started
        rest = await response.content.read()
    if response.status != 200 or not (first + rest).endswith(b'{"type": "message_stop"}\n\n'):
        raise Failed(f"{side.name}: {response.status} {(first + rest)[:200]!r}")
    return elapsed


@dataclass
class StreamRun:
    ok: bool
    seconds: float
    first_chunk: float
    max_gap: float
    chunks: int
    error: str | None = None


async def paced_stream(side: Side, data: bytes, headers: dict[str, str]) -> StreamRun:
    """One paced stream read chunk by chunk: its length, the time to its first chunk,
    the longest silence between two chunks, and whether it ended with message_stop."""
    started = time.perf_counter()
    first = last = max_gap = 0.0
    chunks = 0
    seen = bytearray()
    try:
        async with side.http().post(side.url, data=data, headers=headers) as response:
            async for chunk in response.content.iter_any():
                now = time.perf_counter()
                if chunks:
                    max_gap = max(max_gap, now - last)
                else:
                    first = now - started
                last, chunks = now, chunks + 1
                seen += chunk
        ok = response.status == 200 and seen.endswith(b'{"type": "message_stop"}\n\n')
        error = None if ok else f"{response.status} {bytes(seen[-200:])!r}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        ok, error = False, f"{type(exc).__name__}: {exc}"
    return StreamRun(ok, time.perf_counter() - started, first, max_gap, chunks, error)


async def concurrent_round(side: Side, sizes: Sizes) -> dict[str, Any]:
    data, headers = body(True, sizes.events, sizes.gap_ms), side.headers()
    started = time.perf_counter()
    runs = await asyncio.gather(*(paced_stream(side, data, headers)
                                  for _ in range(sizes.concurrent)))
    wall = time.perf_counter() - started
    stall = STALL_FACTOR * sizes.gap_ms / 1e3
    errors = sorted({r.error for r in runs if r.error})
    return {"wall_seconds": wall, "completed": sum(r.ok for r in runs),
            "streams": len(runs), "stalled": sum(r.max_gap > stall for r in runs),
            "max_gap_ms": max(r.max_gap for r in runs) * 1e3,
            "max_gap_p99_ms": pct([r.max_gap * 1e3 for r in runs], 99),
            "first_chunk_ms": stats_ms([r.first_chunk for r in runs]),
            "stream_seconds_p50": pct([r.seconds for r in runs], 50),
            "chunks_median": statistics.median(r.chunks for r in runs),
            "errors": errors[:5]}


Sample = Callable[[Side, bytes, dict[str, str]], Awaitable[float]]


async def interleaved(sides: tuple[Side, Side], sample: Sample, data: bytes, count: int,
                      warmup: int, what: str, progress: Callable[[str], None]
                      ) -> dict[str, list[float]]:
    """`count` samples per side, A/B alternating which goes first (after `warmup`
    untimed ones each); paired by index."""
    headers = {s.name: s.headers() for s in sides}
    for _ in range(warmup):
        for side in sides:
            await sample(side, data, headers[side.name])
    out: dict[str, list[float]] = {s.name: [] for s in sides}
    step = max(1, count // 4)
    for i in range(count):
        for side in (sides if i % 2 == 0 else sides[::-1]):
            out[side.name].append(await sample(side, data, headers[side.name]))
        if (i + 1) % step == 0 and i + 1 < count:
            progress(f"  {what}: {i + 1}/{count} pairs")
    return out


def added(samples: dict[str, list[float]]) -> dict[str, Any]:
    """Direct and gateway summaries (ms) and what the gateway adds: the difference of
    the percentiles, and the percentiles of the paired differences."""
    direct, gateway = stats_ms(samples["direct"]), stats_ms(samples["gateway"])
    diffs = [g - d for d, g in zip(samples["direct"], samples["gateway"], strict=True)]
    result: dict[str, Any] = {
        "direct_ms": direct, "gateway_ms": gateway,
        "added_p50_ms": gateway["p50"] - direct["p50"],
        "added_p99_ms": gateway["p99"] - direct["p99"],
        "paired_difference_ms": stats_ms(diffs),
    }
    result["goal_met"] = result["added_p99_ms"] < GOAL_MS
    return result


async def measure(direct: Side, gateway: Side, sizes: Sizes,
                  progress: Callable[[str], None]) -> dict[str, Any]:
    sides = (direct, gateway)
    for side in sides:
        # Keep-alive; room for every concurrent stream (aiohttp's default is 100).
        side.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=sizes.concurrent + 10, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=120))
    try:
        # The fake provider checks the key: the credential alone is refused there.
        async with direct.http().post(direct.url, data=body(False), headers=Side(
                "x", "", gateway.token).headers()) as refused:
            if refused.status != 401:
                raise Failed(f"the fake provider took the workspace credential: "
                             f"{refused.status}")
        progress(f"gateway: {sizes.calls} non-streamed calls per side, interleaved")
        plain = await interleaved(sides, call, body(False), sizes.calls, sizes.warmup,
                                  "non-streamed", progress)
        progress(f"gateway: {sizes.streams} streamed calls per side (time to first byte)")
        ttfb = await interleaved(sides, first_byte, body(True), sizes.streams, sizes.warmup,
                                 "streamed", progress)
        progress(f"gateway: {sizes.concurrent} concurrent streams ({sizes.events} events "
                 f"{sizes.gap_ms:.0f} ms apart), 1 warm-up + {sizes.rounds} rounds per side")
        rounds: dict[str, list[dict[str, Any]]] = {"direct": [], "gateway": []}
        warm = {side.name: await concurrent_round(side, sizes) for side in sides}
        for r in range(sizes.rounds):
            for side in (sides if r % 2 == 0 else sides[::-1]):
                rounds[side.name].append(await concurrent_round(side, sizes))
            progress(f"  round {r + 1}/{sizes.rounds}: wall direct "
                     f"{rounds['direct'][-1]['wall_seconds']:.3f} s, gateway "
                     f"{rounds['gateway'][-1]['wall_seconds']:.3f} s; max gap direct "
                     f"{rounds['direct'][-1]['max_gap_ms']:.1f} ms, gateway "
                     f"{rounds['gateway'][-1]['max_gap_ms']:.1f} ms")
    finally:
        for side in sides:
            if side.session is not None:
                await side.session.close()
    return {"non_streamed": added(plain), "streamed_ttfb": added(ttfb),
            "concurrent": concurrent_summary(rounds, warm, sizes)}


def concurrent_summary(rounds: dict[str, list[dict[str, Any]]],
                       warm: dict[str, dict[str, Any]], sizes: Sizes) -> dict[str, Any]:
    def side(runs: list[dict[str, Any]]) -> dict[str, Any]:
        return {"wall_seconds_median": statistics.median(r["wall_seconds"] for r in runs),
                "wall_seconds_max": max(r["wall_seconds"] for r in runs),
                "completed": sum(r["completed"] for r in runs),
                "streams": sum(r["streams"] for r in runs),
                "stalled": sum(r["stalled"] for r in runs),
                "max_gap_ms": max(r["max_gap_ms"] for r in runs),
                "first_chunk_p99_ms": max(r["first_chunk_ms"]["p99"] for r in runs)}

    direct, gateway = side(rounds["direct"]), side(rounds["gateway"])
    complete = (gateway["completed"] == gateway["streams"] and gateway["stalled"] == 0
                and warm["gateway"]["completed"] == warm["gateway"]["streams"])
    return {"streams": sizes.concurrent, "events": sizes.events, "gap_ms": sizes.gap_ms,
            "rounds": sizes.rounds, "stall_ms": STALL_FACTOR * sizes.gap_ms,
            "direct": direct, "gateway": gateway,
            "wall_ratio": gateway["wall_seconds_median"] / direct["wall_seconds_median"],
            "warmup": warm, "runs": rounds, "goal_met": complete}


# ---------------------------------------------------------------- the benchmark


def online(proc: ControllerProcess) -> bool:
    return phase(proc.get(WORKSPACE)) == "Online"


def container_env(fleet: Fleet, proc: ControllerProcess) -> dict[str, str]:
    cid = proc.get(WORKSPACE)["status"]["containerID"]
    pairs = fleet.client.api.inspect_container(cid)["Config"]["Env"] or []
    return dict(str(p).split("=", 1) for p in pairs if "=" in str(p))


def counted(proc: ControllerProcess, family: str, label: str) -> dict[str, float]:
    """One counter family of the controller's /metrics, summed by one label's value
    (`wsctl_llm_requests_total` by `class`, `wsctl_db_queries_total` by `origin`)."""
    text = proc.client().request("GET", "/metrics", raw=True)
    out: dict[str, float] = {}
    for m in re.finditer(rf"^{family}\{{([^}}]*)\}} ([0-9.e+-]+)$", text, re.M):
        value = re.search(rf'{label}="([^"]*)"', m[1])
        key = value[1] if value else "?"
        out[key] = out.get(key, 0.0) + float(m[2])
    return out


def snapshot(proc: ControllerProcess) -> dict[str, dict[str, float]]:
    return {"requests": counted(proc, "wsctl_llm_requests_total", "class"),
            "sql": counted(proc, "wsctl_db_queries_total", "origin")}


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def bench_gateway(fleet: Fleet, quick: bool,
                  progress: Callable[[str], None] = _say) -> dict[str, Any]:
    """One `wsctl run`, one gateway-mode minimax workspace whose baseURL is the fake
    provider; the provider called direct and through the gateway, interleaved."""
    sizes = QUICK if quick else FULL
    progress("gateway: added latency of the LLM gateway against direct calls to a fake "
             "provider")
    upstream = Upstream(fleet.gateway).start()
    try:
        with fleet.controller(INSTANCE) as proc:
            workspace = fleet.workspace(WORKSPACE)
            workspace["spec"]["llm"].update(
                access="gateway",
                baseURL=f"http://host.docker.internal:{upstream.port}/anthropic/v1/")
            proc.apply(workspace)
            wait_for(lambda: online(proc), 120, f"{WORKSPACE} Online")
            env = container_env(fleet, proc)
            credential = env.get("ANTHROPIC_AUTH_TOKEN")
            if not credential or credential == KEY or env.get("MINIMAX_API_KEY") != credential:
                raise Failed("the container was not given a gateway credential "
                             "(ANTHROPIC_AUTH_TOKEN = MINIMAX_API_KEY, not the key)")
            base = urlsplit(env["ANTHROPIC_BASE_URL"])
            if base.hostname != "host.docker.internal":
                raise Failed(f"unexpected ANTHROPIC_BASE_URL {base.geturl()}")
            # What the container calls; host.docker.internal is the network's gateway.
            through = f"http://{fleet.gateway}:{base.port}{base.path}/v1/messages"
            before = snapshot(proc)
            started = time.monotonic()
            result = asyncio.run(measure(Side("direct", upstream.url, KEY),
                                         Side("gateway", through, credential), sizes,
                                         progress))
            after = snapshot(proc)
    finally:
        upstream.stop()
    requests = delta(before["requests"], after["requests"])
    # The gateway's statements (unattributed: origin `other`) and the rest of the
    # controller's in the window (heartbeats, resyncs), the scrapes' own left out.
    sql = {k: v for k, v in delta(before["sql"], after["sql"]).items() if k != "metrics"}
    result.update(
        sizes=sizes.__dict__, seconds=time.monotonic() - started,
        direct_url=upstream.url, gateway_url=through,
        gateway_requests_by_class=requests,
        sql_statements_by_origin=sql,
        sql_statements_per_request=sum(sql.values()) / max(1.0, sum(requests.values())),
        goal=f"p99 added latency < {GOAL_MS:g} ms (gateway p99 - direct p99; non-streamed "
             "calls and streamed time to first byte); every concurrent stream completes, "
             "none stalls",
        goal_ms=GOAL_MS)
    result["goal_met"] = all(result[k]["goal_met"] for k in
                             ("non_streamed", "streamed_ttfb", "concurrent"))
    ns, tt, cc = result["non_streamed"], result["streamed_ttfb"], result["concurrent"]
    progress(f"gateway: non-streamed added p50 {ns['added_p50_ms']:.2f} ms, p99 "
             f"{ns['added_p99_ms']:.2f} ms; first byte added p50 {tt['added_p50_ms']:.2f} ms, "
             f"p99 {tt['added_p99_ms']:.2f} ms; {cc['gateway']['completed']}/"
             f"{cc['gateway']['streams']} concurrent streams complete")
    return result


# ---------------------------------------------------------------- report


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def gateway_rows(g: dict[str, Any]) -> list[str]:
    """Rows of a `| measure | direct | through the gateway | added | goal | |` table."""
    rows = []
    for key, what in (("non_streamed", "non-streamed message, request -> whole answer"),
                      ("streamed_ttfb", "streamed message, request -> first body chunk")):
        m = g[key]
        d, w, p = m["direct_ms"], m["gateway_ms"], m["paired_difference_ms"]
        rows += [
            f"| {what}, p50 of {d['n']} | {d['p50']:.2f} ms | {w['p50']:.2f} ms | "
            f"{m['added_p50_ms']:+.2f} ms (paired: {p['p50']:+.2f} ms) | | |",
            f"| {what}, p99 of {d['n']} | {d['p99']:.2f} ms | {w['p99']:.2f} ms | "
            f"{m['added_p99_ms']:+.2f} ms (paired: {p['p99']:+.2f} ms) | < {g['goal_ms']:g} ms"
            f" | {verdict(m['goal_met'])} |"]
    c = g["concurrent"]
    d, w = c["direct"], c["gateway"]
    rows += [
        f"| {c['streams']} concurrent streams ({c['events']} events {c['gap_ms']:.0f} ms "
        f"apart), {c['rounds']} rounds: completed / stalled (silence > {c['stall_ms']:.0f} ms)"
        f" | {d['completed']}/{d['streams']} / {d['stalled']} | "
        f"{w['completed']}/{w['streams']} / {w['stalled']} | | all complete, none stalls | "
        f"{verdict(c['goal_met'])} |",
        f"| {c['streams']} concurrent streams: longest silence between two chunks at the "
        f"client | {d['max_gap_ms']:.1f} ms | {w['max_gap_ms']:.1f} ms | | | |",
        f"| {c['streams']} concurrent streams: wall time, median of rounds | "
        f"{d['wall_seconds_median']:.3f} s | {w['wall_seconds_median']:.3f} s | "
        f"x{c['wall_ratio']:.2f} | | |",
        f"| {c['streams']} concurrent streams: time to first chunk, worst round's p99 | "
        f"{d['first_chunk_p99_ms']:.1f} ms | {w['first_chunk_p99_ms']:.1f} ms | | | |",
    ]
    return rows


def gateway_table(g: dict[str, Any]) -> str:
    lines = [
        "## LLM gateway: added latency",
        "",
        "A fake Anthropic-style provider (its own process) called direct with the real key "
        "and through the gateway with the workspace's credential (the URL and credential "
        "its container was given), alternating call by call; one keep-alive session per "
        "side, warmed up first. Added = gateway percentile - direct percentile; paired = "
        "the percentile of the per-pair differences. For reference: OpenSandbox's egress "
        f"proxy documents ~{OPENSANDBOX_MS:.0f} ms added per request.",
        "",
        "| measure | direct | through the gateway | added | goal | |",
        "|---|---|---|---|---|---|",
        *gateway_rows(g),
    ]
    classes = ", ".join(f"{k} {v:.0f}" for k, v in sorted(
        g.get("gateway_requests_by_class", {}).items()))
    lines += ["", f"Gateway requests by class (the controller's /metrics): {classes or '-'}; "
              f"SQL statements per gateway request: {g['sql_statements_per_request']:.2f} "
              "(every statement the controller sent in the window, its scrapes' aside)"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the fake provider's process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the benchmark's fake LLM provider")
    parser.add_argument("--upstream", nargs=2, metavar=("HOST", "PORT"), required=True)
    args = parser.parse_args(argv)
    host, port = args.upstream[0], int(args.upstream[1])
    web.run_app(upstream_app(os.environ[KEY_ENV]), host=host, port=port, backlog=4096,
                access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
