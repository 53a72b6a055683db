"""The report of ``bench.report``: Markdown tables, the issue's goals judged, PNG plots."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI
import matplotlib.pyplot as plt

from bench.http import WRK_TIMEOUT_S
from bench.report import ENDPOINTS, FASTAPI_ENDPOINTS, HELLO, Point, Results

LABELS = {"coinlink": "CoinLink", "fastapi": "FastAPI + Redis", "bare": "bare Sanic (hello)"}
COLOURS = {"coinlink": "tab:blue", "fastapi": "tab:orange", "bare": "tab:gray"}
WS_LABELS = {"coinlink": "CoinLink /ws", "bare": "bare websockets.broadcast()"}
GOAL_CONNECTIONS = 64
DPI = 100


def median(points: Iterable[Point], key: str) -> float:
    values = [p[key] for p in points]
    return statistics.median(values) if values else float("nan")


def ratio(top: list[Point], bottom: list[Point], key: str = "rps") -> float:
    """The median over rounds of ``top / bottom``, round by round (measured side by side)."""
    pairs = [t[key] / b[key] for t, b in zip(top, bottom, strict=False) if b[key]]
    return statistics.median(pairs) if pairs else float("nan")


def endpoint_servers(endpoint: str) -> list[tuple[str, str]]:
    servers = [("coinlink", endpoint)]
    if endpoint in FASTAPI_ENDPOINTS:
        servers.append(("fastapi", endpoint))
    return [*servers, ("bare", HELLO)]


def slug(endpoint: str) -> str:
    return endpoint.replace("/", "-")


# Plots


def plot_endpoint(results: Results, endpoint: str, out: Path) -> str:
    connections = list(results.plan.connections)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for server, case in endpoint_servers(endpoint):
        rows = [results.points(server, case, c) for c in connections]
        colour, label = COLOURS[server], LABELS[server]
        left.plot(connections, [median(r, "rps") for r in rows], "o-", color=colour, label=label)
        for key, style in (("p50_ms", ":"), ("p95_ms", "--"), ("p99_ms", "-")):
            right.plot(
                connections,
                [median(r, key) for r in rows],
                style,
                marker="o",
                markersize=3,
                color=colour,
                label=f"{label} {key[:3]}",
            )
    path = ENDPOINTS[endpoint][0]
    left.set(title=f"{endpoint}: throughput", xlabel="connections", ylabel="requests/s")
    right.set(title=f"{endpoint}: latency", xlabel="connections", ylabel="ms")
    right.set_yscale("log")
    left.set_ylim(bottom=0)
    for axes in (left, right):
        axes.set_xscale("log", base=2)
        axes.set_xticks(connections, [str(c) for c in connections])
        axes.grid(alpha=0.3)
    left.legend(fontsize=7)
    right.legend(fontsize=6, ncol=len(endpoint_servers(endpoint)))
    fig.suptitle(f"GET {path}", fontsize=9)
    fig.tight_layout()
    name = f"http-{slug(endpoint)}.png"
    fig.savefig(out / name, dpi=DPI)
    plt.close(fig)
    return name


def plot_ws(results: Results, out: Path) -> str:
    clients = list(results.plan.ws_clients)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for server, label in WS_LABELS.items():
        rows = [results.ws.get(f"{server} {n}", []) for n in clients]
        colour = COLOURS[server]
        left.plot(clients, [median(r, "p99_ms") for r in rows], "o-", color=colour, label=label)
        right.plot(clients, [median(r, "cpu_us") for r in rows], "o-", color=colour, label=label)
    rate = f"{results.plan.ws_rate:g} updates/s per client"
    left.set(title="p99 publish-to-receive latency", xlabel="clients", ylabel="ms")
    right.set(title="server CPU per delivery", xlabel="clients", ylabel="µs")
    for axes in (left, right):
        axes.set_xscale("log")
        axes.set_xticks(clients, [f"{n:,}" for n in clients])
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    right.set_ylim(bottom=0)
    fig.suptitle(f"WebSocket fan-out, {rate}, {results.plan.workers} workers", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "ws.png", dpi=DPI)
    plt.close(fig)
    return "ws.png"


# Goals


def verdict(ok: bool | None) -> str:
    return "**inconclusive**" if ok is None else "**met**" if ok else "**not met**"


def goals(results: Results) -> list[str]:
    c = GOAL_CONNECTIONS
    lines = []
    bare = results.points("bare", HELLO, c)

    def http_goal(endpoint: str, target: float, p99_ms: float | None) -> None:
        points = results.points("coinlink", endpoint, c)
        if not points:
            lines.append(f"- {endpoint}: not measured at {c} connections")
            return
        r, p99 = ratio(points, bare), median(points, "p99_ms")
        ok = r >= target and (p99_ms is None or p99 < p99_ms)
        latency = f", p99 {p99:.0f} ms (goal < {p99_ms:.0f} ms)" if p99_ms else ""
        lines.append(
            f"- {endpoint} ≥ {target}x bare Sanic{' with p99 < 100 ms' if p99_ms else ''} at "
            f"{c} connections: {r:.3f}x{latency} — {verdict(ok)}"
        )

    http_goal("ticker", 0.6, None)
    for endpoint in ("users/me", "alerts", "notifications"):
        http_goal(endpoint, 0.25, 100.0)
    http_goal("candles", 0.25, None)
    for clients, target in ((1000, 0.85), (2000, 1.0), (10000, 1.0)):
        coin, bare_ws = results.ws.get(f"coinlink {clients}"), results.ws.get(f"bare {clients}")
        if not coin or not bare_ws:
            lines.append(f"- WebSocket at {clients:,} clients: not measured in this run")
            continue
        cpu = ratio(bare_ws, coin, "cpu_us")  # CPU per delivery: bare / CoinLink
        p99, bare_p99 = median(coin, "p99_ms"), median(bare_ws, "p99_ms")
        p99_ok = clients == 1000 or p99 <= 1.2 * bare_p99
        lines.append(
            f"- WebSocket at {clients:,} clients ≥ {target}x bare broadcast (CPU per delivery)"
            f"{'' if clients == 1000 else ', p99 ≤ 1.2x bare'}: {cpu:.3f}x, p99 {p99:.0f} ms "
            f"vs {bare_p99:.0f} ms — {verdict(cpu >= target and p99_ok)}"
        )
    login = results.login
    if login:
        beside, alone = login["ticker_p99_beside_ms"], login["ticker_p99_alone_ms"]
        hashing, loop = login.get("hashing_cpu_ms", 0.0), login.get("loop_cpu_ms", 0.0)
        if hashing + loop > 0:
            share = hashing / (hashing + loop)
            ok: bool | None = share >= 0.8 and beside < 100
            cost = f"bcrypt {hashing:.0f} of {hashing + loop:.0f} ms CPU per login ({share:.2f})"
        else:  # no login answered, or results from before the split by thread
            ok = False if beside >= 100 else None
            cost = "a login's CPU time not measured on this run"
        lines.append(
            "- Login bounded by bcrypt with nothing queued behind it (bcrypt ≥ 0.8 of a "
            f"login's server CPU time; ticker p99 < 100 ms while logins run): {cost}; ticker "
            f"p99 {beside:.0f} ms beside the logins ({alone:.0f} ms alone) — {verdict(ok)}"
        )
    return lines


# Tables


def http_table(results: Results, endpoint: str) -> list[str]:
    servers = [s for s, _ in endpoint_servers(endpoint)]
    header = "| connections |"
    for server in servers:
        header += f" {LABELS[server]} req/s | p50 / p95 / p99 ms |"
    header += " ÷ bare |" + (" ÷ FastAPI |" if "fastapi" in servers else "")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for c in results.plan.connections:
        row = f"| {c} |"
        for server, case in endpoint_servers(endpoint):
            p = results.points(server, case, c)
            row += (
                f" {median(p, 'rps'):,.0f} | {median(p, 'p50_ms'):.1f} / "
                f"{median(p, 'p95_ms'):.1f} / {median(p, 'p99_ms'):.1f} |"
            )
        coin = results.points("coinlink", endpoint, c)
        row += f" {ratio(coin, results.points('bare', HELLO, c)):.2f} |"
        if "fastapi" in servers:
            row += f" {ratio(coin, results.points('fastapi', endpoint, c)):.2f} |"
        lines.append(row)
    failed = []
    for c in results.plan.connections:
        for server, case in endpoint_servers(endpoint):
            errors = sum(p["errors"] for p in results.points(server, case, c))
            if errors:
                failed.append(f"{LABELS[server]} at {c}: {errors:,.0f}")
    if failed:
        lines.append(
            f"\nRequests that failed (no answer within wrk's {WRK_TIMEOUT_S} s timeout, a "
            f"socket error or a non-2xx status), over the rounds: {'; '.join(failed)}."
        )
    return lines


def ws_table(results: Results) -> list[str]:
    lines = [
        "| clients | server | connected | deliveries/s | loss | p50 / p95 / p99 ms "
        "| CPU µs/delivery | bare ÷ CoinLink CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in results.plan.ws_clients:
        for server in WS_LABELS:
            rows = results.ws.get(f"{server} {n}", [])
            if not rows:
                continue
            cpu_ratio = ratio(results.ws.get(f"bare {n}", []), rows, "cpu_us")
            lines.append(
                f"| {n:,} | {WS_LABELS[server]} | {median(rows, 'connected'):,.0f} "
                f"| {median(rows, 'rate'):,.0f} | {median(rows, 'loss_pct'):.2f} % "
                f"| {median(rows, 'p50_ms'):.1f} / {median(rows, 'p95_ms'):.1f} / "
                f"{median(rows, 'p99_ms'):.1f} | {median(rows, 'cpu_us'):.1f} "
                f"| {cpu_ratio:.2f} |"
            )
    return lines


def write(results: Results, out: Path) -> None:
    plan, m = results.plan, results.machine
    load = " / ".join(f"{x:.2f}" for x in m["load_start"])
    load_end = " / ".join(f"{x:.2f}" for x in m["load_end"])
    doc = [
        "# CoinLink benchmark report",
        "",
        f"Generated by `{results.command}` (`make bench`) on {results.started}. "
        "Regenerate with `make bench`; `bench/report.py` says what is measured and how.",
        "",
        "## Machine and setup",
        "",
        f"- {m['cores']} cores ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}; "
        f"the code of commit {m.get('commit', 'unknown')}.",
        f"- Load average (1 / 5 / 15 min) at the start: {load}; at the end: {load_end}. "
        "The machine is shared with other work: absolute figures move with that load, the "
        "ratios (measured side by side, round by round, the order alternating) much less.",
        f"- PostgreSQL {results.services.get('postgresql')}, Redis "
        f"{results.services.get('redis')}; every server with {plan.workers} workers "
        "(several workers, as deployed).",
        "- CoinLink in production mode (`COINLINK_ENV=production`): every middleware on, the "
        "access log on, the rate limiter deciding every request (limits raised so it never "
        "refuses), the simulator provider feeding live tickers, 500 closed 1m candles in "
        "PostgreSQL, a user with 20 alerts and 10 notifications.",
        "- FastAPI + Redis (`bench/fastapi_app.py`, uvicorn): the ticker as a JSON string in "
        "Redis, `/users/me` verifying the JWT with PyJWT and reading PostgreSQL through an "
        "asyncpg pool, candles from PostgreSQL; no limiter, no access log. Bare Sanic "
        "(`bench/bare_app.py`) answers a JSON hello world and is every endpoint's baseline.",
        f"- HTTP load: wrk, one thread; {plan.rounds} round(s) of {plan.seconds} s per point "
        f"at {', '.join(map(str, plan.connections))} connections (medians of the rounds; "
        "ratios are medians of per-round ratios).",
        f"- WebSocket: {plan.ws_rate:g} ticker updates/s per client over 10 channels, "
        f"{plan.ws_seconds:g} s windows, {plan.ws_client_procs} client processes "
        f"(RLIMIT_NOFILE {m.get('nofile')}, ephemeral ports {m.get('ephemeral_ports')}).",
        "",
        "## Goals of issue 16",
        "",
        *goals(results),
        "",
        "## HTTP endpoints",
        "",
    ]
    for endpoint, (path, _) in ENDPOINTS.items():
        image = plot_endpoint(results, endpoint, out)
        doc += [f"### {endpoint} — `GET {path}`", "", *http_table(results, endpoint), ""]
        doc += [f"![{endpoint}]({image})", ""]
    login = results.login
    doc += [
        "## Login",
        "",
        f"{plan.login_connections} connections logging in for {plan.login_seconds} s at "
        f"bcrypt cost {plan.bcrypt_rounds}, beside a ticker load of 16 connections: "
        f"{login['rps']:.1f} logins/s (p50 {login['p50_ms']:.0f} ms, p99 "
        f"{login['p99_ms']:.0f} ms; {login['errors']:.0f} refused with 503 or failed over "
        f"this and the run alone). Alone, {login.get('alone_rps', 0):.1f} logins/s; each "
        f"cost the server {login.get('hashing_cpu_ms', 0):.0f} ms of CPU in threads other "
        "than the event loops (the executors, where bcrypt runs) and "
        f"{login.get('loop_cpu_ms', 0):.1f} ms in the event loops, beyond the "
        f"{login['idle_cpu_ms_s']:.0f} ms/s the server spends idle (the simulator, ingest, "
        "the alert engine; per thread from `/proc`). One bcrypt check in this process costs "
        f"{login['bcrypt_cpu_ms']:.0f} ms, so "
        f"{m['cores']} cores bound logins at "
        f"{m['cores'] * 1000 / login['bcrypt_cpu_ms']:.1f}/s. The ticker's p99: "
        f"{login['ticker_p99_alone_ms']:.1f} ms alone, {login['ticker_p99_beside_ms']:.1f} ms "
        "while the logins run.",
        "",
        "## WebSocket fan-out",
        "",
        *ws_table(results),
        "",
        "Clients, publisher and servers share the machine: the latency includes the client "
        "processes' own backlog (each parses its share of every delivery), and a loaded "
        "machine shows it first at the largest counts. CPU per delivery counts the server's "
        "processes only; it is the figure the ratio is taken on.",
        "",
        f"![WebSocket]({plot_ws(results, out)})",
        "",
    ]
    (out / "README.md").write_text("\n".join(doc))
