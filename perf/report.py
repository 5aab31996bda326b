#!/usr/bin/env python3
"""Turns the scenario results written by perf/run.sh into the figures of
perf/RESULTS.md and two plots, perf/handshakes.svg and perf/latency.svg.

Input: RESULTS_DIR/SERVER-SCENARIO.json (SERVER in shardtls, haproxy, nginx)
and RESULTS_DIR/machine.json. Only the part of perf/RESULTS.md between the
lines `<!-- figures:begin -->` and `<!-- figures:end -->` is rewritten; the
text around it is kept. Missing results show as "n/a".

Usage: python3 perf/report.py [RESULTS_DIR]    (default: perf/results)
"""

import glob
import html
import json
import math
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = ["shardtls", "haproxy", "nginx"]
NAMES = {"shardtls": "shardtls", "haproxy": "HAProxy", "nginx": "nginx"}
COLORS = {"shardtls": "#1f77b4", "haproxy": "#d62728", "nginx": "#2ca02c"}
BASE_SCENARIOS = [
    "handshake",
    "handshake-request",
    "resume",
    "bulk-up",
    "bulk-both",
    "bulk-down",
    "idle",
]
BEGIN = "<!-- figures:begin -->"
END = "<!-- figures:end -->"
# A latency run whose server delivered less than this share of the offered
# rate was saturated (or stalled); its percentiles measure queueing.
DELIVERED_MIN = 0.95
NA = "n/a"


# ---------------------------------------------------------------- loading


class Results:
    def __init__(self, directory):
        self.dir = directory
        self.data = {}  # (server, scenario) -> dict
        self.unreadable = []  # file names that exist but do not parse
        self.machine = {}
        for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
            name = os.path.basename(path)[:-5]
            try:
                with open(path) as f:
                    d = json.load(f)
            except (OSError, ValueError):
                self.unreadable.append(os.path.basename(path))
                continue
            if name == "machine":
                self.machine = d if isinstance(d, dict) else {}
                continue
            server, _, scenario = name.partition("-")
            if server in SERVERS and scenario and isinstance(d, dict):
                self.data[(server, scenario)] = d

    def get(self, server, scenario):
        return self.data.get((server, scenario))

    def metric(self, server, scenario, name):
        d = self.get(server, scenario)
        if not d:
            return None
        m = (d.get("metrics") or {}).get(name)
        if isinstance(m, dict):
            v = m.get("value")
        else:
            v = m
        return float(v) if isinstance(v, (int, float)) else None

    def unit(self, server, scenario, name):
        d = self.get(server, scenario) or {}
        m = (d.get("metrics") or {}).get(name)
        return m.get("unit", "") if isinstance(m, dict) else ""

    def lat(self, server, scenario, name, q):
        d = self.get(server, scenario)
        if not d:
            return None
        v = ((d.get("latency") or {}).get(name) or {}).get(q)
        return float(v) if isinstance(v, (int, float)) else None

    def rates(self):
        found = set()
        for _, scenario in self.data:
            m = re.fullmatch(r"latency-(\d+)", scenario)
            if m:
                found.add(int(m.group(1)))
        return sorted(found)

    def offered(self, server, rate):
        d = self.get(server, f"latency-{rate}") or {}
        v = (d.get("params") or {}).get("rate_offered")
        return float(v) if isinstance(v, (int, float)) and v > 0 else float(rate)

    def delivered_share(self, server, rate):
        v = self.metric(server, f"latency-{rate}", "requests_per_s")
        if v is None:
            return None
        return v / self.offered(server, rate)

    def saturated(self, server, rate):
        share = self.delivered_share(server, rate)
        errs = self.metric(server, f"latency-{rate}", "errors") or 0
        return (share is not None and share < DELIVERED_MIN) or errs > 0


# ---------------------------------------------------------------- formatting


def fmt(v, kind):
    if v is None:
        return NA
    if kind == "rate":
        return f"{v:,.0f}"
    if kind == "gb":
        return f"{v:.2f}"
    if kind == "ns":
        return f"{v:.3f}"
    if kind == "us":
        return f"{v:,.0f}"
    if kind == "pct":
        return f"{v:.1f}%"
    if kind == "bytes":
        return f"{v:,.0f}"
    if kind == "cores":
        return f"{v:.2f}"
    if kind == "count":
        return f"{v:,.0f}"
    return f"{v}"


def fmt_ratio(r):
    if r is None:
        return NA
    if r >= 100:
        return f"{r:,.0f}×"
    if r >= 10:
        return f"{r:.1f}×"
    if r >= 0.01:
        return f"{r:.2f}×"
    return "<0.01×"


def ratio(ours, theirs, lower_is_better=False):
    """shardtls relative to a peer, oriented so that > 1 means shardtls did better."""
    if ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return None
    return theirs / ours if lower_is_better else ours / theirs


def hit_rate_pct(res, server):
    v = res.metric(server, "resume", "resumption_hit_rate")
    if v is None:
        return None
    unit = res.unit(server, "resume", "resumption_hit_rate")
    return v if unit == "%" or v > 1.0 else v * 100.0


def short_version(s, cut):
    return s.split(cut)[0].strip() if isinstance(s, str) else NA


def machine_line(m):
    if not m:
        return "Machine and versions: n/a (machine.json missing)."
    cores = m.get("cores")
    return (
        f"Run of {m.get('date', NA)} on {m.get('cpu', NA)}, "
        f"{cores if cores is not None else NA} cores, Linux {m.get('kernel', NA)}; "
        f"{m.get('shardtls', 'shardtls ' + NA)}; "
        f"{short_version(m.get('haproxy', 'HAProxy ' + NA), ' - ')}; "
        f"{m.get('nginx', 'nginx ' + NA)}; "
        f"{short_version(m.get('openssl', 'OpenSSL ' + NA), ' (')}; "
        f"key type {m.get('key_type', NA)}."
    )


# ---------------------------------------------------------------- tables


def row3(label, values, kind, lower_is_better=False):
    s, h, n = values
    return (
        f"| {label} | {fmt(s, kind)} | {fmt(h, kind)} | {fmt(n, kind)} | "
        f"{fmt_ratio(ratio(s, h, lower_is_better))} | {fmt_ratio(ratio(s, n, lower_is_better))} |"
    )


def per_core_table(res):
    m = lambda sc, k: [res.metric(s, sc, k) for s in SERVERS]
    key = (res.machine.get("key_type") or "").upper()
    out = [
        "| per server core | shardtls | HAProxy | nginx | shardtls / HAProxy | shardtls / nginx |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        row3(f"full handshakes/s (TLS 1.3{', ' + key if key else ''})", m("handshake", "handshakes_per_s_per_server_core"), "rate"),
        row3("full handshakes + 1 request/s", m("handshake-request", "handshakes_per_s_per_server_core"), "rate"),
        row3("resumed handshakes/s", m("resume", "handshakes_per_s_per_server_core"), "rate"),
        row3("&nbsp;&nbsp;resumption hit rate", [hit_rate_pct(res, s) for s in SERVERS], "pct"),
    ]
    for d in ["up", "both", "down"]:
        out.append(row3(f"bulk {d}, GB/s", m(f"bulk-{d}", "gbytes_per_s_per_server_core"), "gb"))
        out.append(row3(f"&nbsp;&nbsp;bulk {d}, server CPU ns/byte", m(f"bulk-{d}", "server_cpu_ns_per_byte"), "ns", True))
    for r in res.rates():
        sc = f"latency-{r}"
        out.append(row3(f"requests/s at {r:,}/s offered", m(sc, "requests_per_s_per_server_core"), "rate"))
        for q, qn in [("p50", "p50"), ("p99", "p99"), ("p99_9", "p99.9")]:
            out.append(
                row3(
                    f"&nbsp;&nbsp;request latency {qn} at {r:,}/s, µs",
                    [res.lat(s, sc, "request", q) for s in SERVERS],
                    "us",
                    True,
                )
            )
    out.append(row3("memory per idle TLS connection, bytes", m("idle", "server_bytes_per_connection"), "bytes", True))
    out += [
        "",
        "Ratios are shardtls / peer, so higher is better. For CPU ns/byte, latency and "
        "memory, where lower is better, the ratio is inverted (peer / shardtls), so a "
        "ratio above 1 still means shardtls did better. Per server core = throughput "
        "divided by the server's CPU seconds per wall second. Latency at an offered rate "
        "the server did not keep up with includes queueing (see the failures list below).",
    ]
    return out


def absolute_table(res):
    out = [
        "| absolute (not per core) | shardtls | cores busy | HAProxy | cores busy | nginx | cores busy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = [
        ("full handshakes/s", "handshake", "handshakes_per_s", "rate"),
        ("full handshakes + 1 request/s", "handshake-request", "handshakes_per_s", "rate"),
        ("resumed handshakes/s", "resume", "handshakes_per_s", "rate"),
        ("bulk up, GB/s", "bulk-up", "gbytes_per_s", "gb"),
        ("bulk both, GB/s", "bulk-both", "gbytes_per_s", "gb"),
        ("bulk down, GB/s", "bulk-down", "gbytes_per_s", "gb"),
    ]
    rows += [
        (f"requests/s delivered at {r:,}/s offered", f"latency-{r}", "requests_per_s", "rate")
        for r in res.rates()
    ]
    for label, sc, k, kind in rows:
        cells = []
        for s in SERVERS:
            cells.append(fmt(res.metric(s, sc, k), kind))
            cells.append(fmt(res.metric(s, sc, "server_cores_busy"), "cores"))
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("")
    out.append(
        "Cores busy = server CPU seconds per wall-clock second over the measured window. "
        "In the closed-loop scenarios (handshakes, bulk) a value below 1 means the single "
        "load-generator core, not the server, set the pace; latency runs are paced at the offered rate."
    )
    return out


def rotate_table(res):
    d = res.get("shardtls", "rotate")
    if not d:
        return ["Rotate (shardtls): n/a (no shardtls-rotate.json)."]
    m = lambda k: res.metric("shardtls", "rotate", k)
    lt = lambda name, q: res.lat("shardtls", "rotate", name, q)
    hs_rot = lt("handshake", "p99")
    hs_base = res.lat("shardtls", "handshake", "handshake", "p99")
    if hs_rot is not None and hs_base:
        impact = f"{fmt(hs_rot, 'us')} vs {fmt(hs_base, 'us')} ({(hs_rot / hs_base - 1) * 100:+.1f}%)"
    else:
        impact = f"{fmt(hs_rot, 'us')} vs {fmt(hs_base, 'us')}"
    params = d.get("params") or {}
    interval = params.get("interval_s")
    every = f", one every {interval * 1000:g} ms" if isinstance(interval, (int, float)) else ""
    return [
        "| rotate (shardtls, configuration changes under load) | value |",
        "| --- | ---: |",
        f"| changes applied{every} (refused) | {fmt(m('changes_applied'), 'count')} ({fmt(m('changes_refused'), 'count')}) |",
        f"| propagation (admin round trip) p50 / p99, µs | {fmt(lt('propagation', 'p50'), 'us')} / {fmt(lt('propagation', 'p99'), 'us')} |",
        f"| errors on established connections | {fmt(m('established_errors'), 'count')} |",
        f"| resumptions across a change: attempted / succeeded | {fmt(m('resumptions_attempted_across_change'), 'count')} / {fmt(m('resumptions_across_change_succeeded'), 'count')} |",
        f"| handshakes failed | {fmt(m('handshakes_failed'), 'count')} |",
        f"| handshake p99 during rotate vs handshake scenario, µs | {impact} |",
        f"| request latency p50 / p99 on established connections during rotate, µs | {fmt(lt('request', 'p50'), 'us')} / {fmt(lt('request', 'p99'), 'us')} |",
        f"| operations/s per server core during rotate | {fmt(m('operations_per_s_per_server_core'), 'rate')} |",
    ]


FAILURE_COUNTS = {
    # metric -> what a non-zero value means
    "resumptions_across_change_succeeded": "resumptions across a change succeeded",
    "closed_by_server_while_idle": "idle connections closed by the server",
}


def problems(res):
    """Every failed invariant, ok=false, error count, saturation and missing file."""
    out = []
    for (server, scenario), d in sorted(res.data.items()):
        what = []
        if d.get("ok") is False:
            what.append('"ok" is false')
        for k, v in sorted((d.get("invariants") or {}).items()):
            if v is not True:
                what.append(f"invariant `{k}` broken")
        for k, v in sorted((d.get("metrics") or {}).items()):
            val = v.get("value") if isinstance(v, dict) else v
            if not isinstance(val, (int, float)) or val <= 0:
                continue
            if k == "errors" or k.endswith("_errors") or k.endswith("_failed") or k.endswith("_refused"):
                what.append(f"{k} = {val:,.0f}")
            elif k in FAILURE_COUNTS:
                what.append(f"{FAILURE_COUNTS[k]} = {val:,.0f}")
        m = re.fullmatch(r"latency-(\d+)", scenario)
        if m:
            r = int(m.group(1))
            share = res.delivered_share(server, r)
            if share is not None and share < DELIVERED_MIN:
                got = res.metric(server, scenario, "requests_per_s")
                what.append(
                    f"delivered {got:,.0f} of {res.offered(server, r):,.0f} requests/s offered "
                    f"({share * 100:.0f}%): fell behind, its latency includes queueing"
                )
        if what:
            out.append(f"- **{NAMES[server]} {scenario}**: " + "; ".join(what))
    for name in res.unreadable:
        out.append(f"- **{name}**: unreadable (not valid JSON)")
    expected = [(s, sc) for s in SERVERS for sc in BASE_SCENARIOS]
    expected += [(s, f"latency-{r}") for s in SERVERS for r in res.rates()]
    expected.append(("shardtls", "rotate"))
    missing = [f"{s}-{sc}" for s, sc in expected if (s, sc) not in res.data]
    if missing:
        out.append("- missing results (shown as n/a): " + ", ".join(missing))
    return out


# ---------------------------------------------------------------- SVG drawing


def esc(s):
    return html.escape(str(s), quote=True)


def svg_open(w, h):
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
        f'<rect x="0" y="0" width="{w}" height="{h}" fill="white"/>',
    ]


def text(x, y, s, anchor="start", size=None, weight=None, fill=None, extra=""):
    attrs = f'x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"'
    if size:
        attrs += f' font-size="{size}"'
    if weight:
        attrs += f' font-weight="{weight}"'
    if fill:
        attrs += f' fill="{fill}"'
    return f"<text {attrs}{extra}>{esc(s)}</text>"


def nice_step(span, ticks=5):
    raw = span / max(ticks, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for f in (1, 2, 2.5, 5, 10):
        if raw <= f * mag:
            return f * mag
    return 10 * mag


def fmt_tick(v):
    if v >= 1_000_000:
        return f"{v / 1_000_000:g}M"
    if v >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:,.0f}" if v >= 1 else f"{v:g}"


# ---------------------------------------------------------------- handshakes.svg


def handshakes_svg(res, path):
    groups = [
        ("handshake", "full handshake"),
        ("handshake-request", "full handshake + 1 request"),
        ("resume", "resumed handshake"),
    ]
    vals = {(g, s): res.metric(s, g, "handshakes_per_s_per_server_core") for g, _ in groups for s in SERVERS}
    present = [v for v in vals.values() if v is not None]
    top_val = max(present) if present else 1.0
    step = nice_step(top_val * 1.1)
    top = step * math.ceil(top_val * 1.1 / step)

    W, H = 800, 440
    L, R, T, B = 80, 30, 80, 370  # plot area: x from L to W-R, y from T to B
    pw = W - L - R
    ph = B - T
    sy = lambda v: B - ph * v / top
    p = svg_open(W, H)
    p.append(text(W / 2, 28, "TLS handshakes per second per server core", "middle", 17, "bold"))
    key = (res.machine.get("key_type") or "").upper()
    sub = f"TLS 1.3{', ' + key + ' key' if key else ''}, one worker each; higher is better"
    if res.machine.get("date"):
        sub += f"; run of {res.machine['date']}"
    p.append(text(W / 2, 48, sub, "middle", 12, fill="#555"))
    # grid and y axis
    v = 0.0
    while v <= top + step / 2:
        y = sy(v)
        p.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#e2e2e2"/>')
        p.append(text(L - 8, y + 4, f"{v:,.0f}", "end"))
        v += step
    p.append(f'<line x1="{L}" y1="{T - 5}" x2="{L}" y2="{B}" stroke="#333"/>')
    p.append(f'<line x1="{L}" y1="{B}" x2="{W - R}" y2="{B}" stroke="#333"/>')
    ym = (T + B) / 2
    p.append(text(20, ym, "handshakes/s per server core", "middle", extra=f' transform="rotate(-90 20 {ym:.1f})"'))
    # bars
    gw = pw / len(groups)
    bw = min(70.0, gw * 0.8 / len(SERVERS))
    for gi, (g, label) in enumerate(groups):
        gx = L + gw * gi + (gw - bw * len(SERVERS)) / 2
        for si, s in enumerate(SERVERS):
            x = gx + si * bw
            val = vals[(g, s)]
            if val is None:
                p.append(text(x + bw / 2, B - 6, NA, "middle", 11, fill="#888"))
                continue
            y = sy(val)
            p.append(
                f'<rect x="{x + 2:.1f}" y="{y:.1f}" width="{bw - 4:.1f}" height="{B - y:.1f}" '
                f'fill="{COLORS[s]}"><title>{esc(NAMES[s])} {esc(label)}: {val:,.0f}/s</title></rect>'
            )
            p.append(text(x + bw / 2, y - 5, f"{val:,.0f}", "middle", 11))
        p.append(text(L + gw * gi + gw / 2, B + 20, label, "middle", 13))
    # legend (top right, above the plot)
    lx = W - R - 3 * 105
    for i, s in enumerate(SERVERS):
        x = lx + i * 105
        p.append(f'<rect x="{x}" y="{T - 22}" width="14" height="14" fill="{COLORS[s]}"/>')
        p.append(text(x + 20, T - 10, NAMES[s]))
    p.append(
        text(
            W / 2,
            H - 14,
            "per server core = handshakes/s divided by the server's CPU seconds per wall second",
            "middle",
            11,
            fill="#555",
        )
    )
    p.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(p) + "\n")


# ---------------------------------------------------------------- latency.svg


def latency_svg(res, path):
    rates = res.rates()
    W, H = 800, 440
    L, R, T, B = 80, 190, 70, 380
    pw = W - L - R
    ph = B - T
    series = {
        (s, q): [(r, res.lat(s, f"latency-{r}", "request", q)) for r in rates]
        for s in SERVERS
        for q in ("p50", "p99")
    }
    ys = [v for pts in series.values() for _, v in pts if v is not None and v > 0]
    lo_dec = math.floor(math.log10(min(ys))) if ys else 2
    hi_dec = math.ceil(math.log10(max(ys))) if ys else 4
    if hi_dec <= lo_dec:
        hi_dec = lo_dec + 1
    sy = lambda v: B - ph * (math.log10(v) - lo_dec) / (hi_dec - lo_dec)
    if len(rates) > 1:
        lr0, lr1 = math.log(rates[0]), math.log(rates[-1])
        sx = lambda r: L + 30 + (pw - 60) * (math.log(r) - lr0) / (lr1 - lr0)
    else:
        sx = lambda r: L + pw / 2

    p = svg_open(W, H)
    p.append(text((L + W - R) / 2, 28, "Request latency against offered load", "middle", 17, "bold"))
    p.append(
        text(
            (L + W - R) / 2,
            48,
            "kept-alive requests through each server; solid p99, dashed p50; lower is better",
            "middle",
            12,
            fill="#555",
        )
    )
    # y grid: decades labelled, 2x and 5x as minor lines
    for d in range(lo_dec, hi_dec + 1):
        for mult in (1, 2, 5):
            v = mult * 10**d
            if math.log10(v) > hi_dec + 1e-9:
                continue
            y = sy(v)
            if mult == 1:
                p.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#d0d0d0"/>')
                p.append(text(L - 8, y + 4, fmt_tick(v), "end"))
            else:
                p.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#f0f0f0"/>')
    for r in rates:
        x = sx(r)
        p.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{B}" stroke="#f0f0f0"/>')
        p.append(f'<line x1="{x:.1f}" y1="{B}" x2="{x:.1f}" y2="{B + 5}" stroke="#333"/>')
        p.append(text(x, B + 19, f"{r:,}", "middle"))
    p.append(f'<line x1="{L}" y1="{T}" x2="{L}" y2="{B}" stroke="#333"/>')
    p.append(f'<line x1="{L}" y1="{B}" x2="{W - R}" y2="{B}" stroke="#333"/>')
    p.append(text((L + W - R) / 2, B + 40, "offered rate, requests/s (log scale)", "middle"))
    ym = (T + B) / 2
    p.append(
        text(22, ym, "request latency, µs (log scale)", "middle", extra=f' transform="rotate(-90 22 {ym:.1f})"')
    )
    if not ys:
        p.append(text((L + W - R) / 2, ym, "no latency results (n/a)", "middle", 14, fill="#888"))
    # lines and markers
    for s in SERVERS:
        for q in ("p50", "p99"):
            pts = [(r, v) for r, v in series[(s, q)] if v is not None and v > 0]
            if len(pts) > 1:
                d = " ".join(f"{sx(r):.1f},{sy(v):.1f}" for r, v in pts)
                dash = ' stroke-dasharray="7,5"' if q == "p50" else ""
                p.append(
                    f'<polyline points="{d}" fill="none" stroke="{COLORS[s]}" stroke-width="2.2"{dash}/>'
                )
            for r, v in pts:
                hollow = res.saturated(s, r)
                fill = "white" if hollow else COLORS[s]
                p.append(
                    f'<circle cx="{sx(r):.1f}" cy="{sy(v):.1f}" r="4" fill="{fill}" stroke="{COLORS[s]}" '
                    f'stroke-width="2"><title>{esc(NAMES[s])} {q} at {r:,}/s: {v:,.0f} µs</title></circle>'
                )
    # legend
    lx = W - R + 20
    ly = T + 5
    p.append(text(lx, ly, "server", weight="bold"))
    for i, s in enumerate(SERVERS):
        y = ly + 20 + i * 20
        p.append(f'<line x1="{lx}" y1="{y - 4}" x2="{lx + 30}" y2="{y - 4}" stroke="{COLORS[s]}" stroke-width="3"/>')
        p.append(text(lx + 38, y, NAMES[s]))
    ly += 20 + len(SERVERS) * 20 + 14
    p.append(text(lx, ly, "percentile", weight="bold"))
    p.append(f'<line x1="{lx}" y1="{ly + 16}" x2="{lx + 30}" y2="{ly + 16}" stroke="#333" stroke-width="2.2"/>')
    p.append(text(lx + 38, ly + 20, "p99"))
    p.append(
        f'<line x1="{lx}" y1="{ly + 36}" x2="{lx + 30}" y2="{ly + 36}" stroke="#333" '
        f'stroke-width="2.2" stroke-dasharray="7,5"/>'
    )
    p.append(text(lx + 38, ly + 40, "p50"))
    ly += 62
    p.append(f'<circle cx="{lx + 15}" cy="{ly}" r="4" fill="white" stroke="#333" stroke-width="2"/>')
    p.append(text(lx + 38, ly + 4, "fell behind:"))
    p.append(text(lx + 38, ly + 19, f"<{DELIVERED_MIN:.0%} delivered"))
    p.append(text(lx + 38, ly + 34, "or errors"))
    p.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(p) + "\n")


# ---------------------------------------------------------------- RESULTS.md


def wrk_table(directory):
    """The wrk runs of perf/wrk.sh (written as wrk.md beside the JSON)."""
    path = os.path.join(directory, "wrk.md")
    if not os.path.exists(path):
        return ["(no wrk runs: perf/wrk.sh writes them)"]
    with open(path) as f:
        body = f.read().strip().splitlines()
    return ["The same servers under wrk (`perf/wrk.sh`, run by `perf/run.sh`):", "", *body]


def figures_block(res, directory):
    fails = problems(res)
    return [
        BEGIN,
        machine_line(res.machine),
        "",
        *per_core_table(res),
        "",
        *absolute_table(res),
        "",
        *wrk_table(directory),
        "",
        *rotate_table(res),
        "",
        "Failures, errors and runs that fell behind the offered rate:",
        "",
        *(fails or ["- none: every scenario reported ok, all invariants held, 0 errors."]),
        "",
        "![Handshakes per second per server core: full, full + 1 request, resumed](handshakes.svg)",
        "",
        "![Request latency p50 and p99 against offered rate](latency.svg)",
        END,
    ]


def update_results_md(path, block):
    if os.path.exists(path):
        with open(path) as f:
            text_ = f.read()
    else:
        text_ = f"{BEGIN}\n{END}\n"
    if BEGIN not in text_ or END not in text_.split(BEGIN, 1)[1]:
        # Markers missing (or only one of them): append a fresh pair at the end.
        text_ = text_.replace(BEGIN, "") if BEGIN in text_ and END not in text_ else text_
        if text_ and not text_.endswith("\n"):
            text_ += "\n"
        text_ += f"\n{BEGIN}\n{END}\n"
    head, rest = text_.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(path, "w") as f:
        f.write(head + "\n".join(block) + tail)


# ---------------------------------------------------------------- main


def summary(res, fails):
    lines = [machine_line(res.machine)]
    items = [
        ("full handshakes/s/core", "handshake", "handshakes_per_s_per_server_core", "rate", False),
        ("handshake+request/s/core", "handshake-request", "handshakes_per_s_per_server_core", "rate", False),
        ("resumed handshakes/s/core", "resume", "handshakes_per_s_per_server_core", "rate", False),
        ("bulk up GB/s/core", "bulk-up", "gbytes_per_s_per_server_core", "gb", False),
        ("bulk both GB/s/core", "bulk-both", "gbytes_per_s_per_server_core", "gb", False),
        ("bulk down GB/s/core", "bulk-down", "gbytes_per_s_per_server_core", "gb", False),
        ("idle bytes/connection", "idle", "server_bytes_per_connection", "bytes", True),
    ]
    w = max(len(i[0]) for i in items)
    lines.append(f"{'':{w}}  {'shardtls':>10} {'HAProxy':>10} {'nginx':>10} {'vs HAP':>8} {'vs nginx':>8}")
    for label, sc, k, kind, low in items:
        s, h, n = (res.metric(x, sc, k) for x in SERVERS)
        lines.append(
            f"{label:{w}}  {fmt(s, kind):>10} {fmt(h, kind):>10} {fmt(n, kind):>10} "
            f"{fmt_ratio(ratio(s, h, low)):>8} {fmt_ratio(ratio(s, n, low)):>8}"
        )
    for r in res.rates():
        s, h, n = (res.lat(x, f"latency-{r}", "request", "p99") for x in SERVERS)
        lines.append(
            f"{('p99 µs at ' + format(r, ',') + '/s'):{w}}  {fmt(s, 'us'):>10} {fmt(h, 'us'):>10} "
            f"{fmt(n, 'us'):>10} {fmt_ratio(ratio(s, h, True)):>8} {fmt_ratio(ratio(s, n, True)):>8}"
        )
    if fails:
        lines.append(f"{len(fails)} problem line(s):")
        lines += ["  " + f.replace("**", "").lstrip("- ") for f in fails]
    else:
        lines.append("no failures: every scenario ok, all invariants held, 0 errors")
    return lines


def main(argv):
    if len(argv) > 2 or (len(argv) == 2 and argv[1] in ("-h", "--help")):
        print(__doc__.strip())
        return 0 if len(argv) == 2 else 2
    directory = argv[1] if len(argv) == 2 else os.path.join(HERE, "results")
    if not os.path.isdir(directory):
        print(f"warning: {directory} is not a directory; every figure will be n/a", file=sys.stderr)
    res = Results(directory)
    hs_path = os.path.join(HERE, "handshakes.svg")
    lat_path = os.path.join(HERE, "latency.svg")
    md_path = os.path.join(HERE, "RESULTS.md")
    handshakes_svg(res, hs_path)
    latency_svg(res, lat_path)
    update_results_md(md_path, figures_block(res, directory))
    print("\n".join(summary(res, problems(res))))
    rel = lambda p_: os.path.relpath(p_)
    print(f"wrote {rel(md_path)}, {rel(hs_path)}, {rel(lat_path)} from {len(res.data)} result file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
