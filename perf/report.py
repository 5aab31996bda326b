#!/usr/bin/env python3
"""Turns perf/results/*.json (written by perf/run.sh) into the figures of
perf/RESULTS.md and two plots, perf/handshakes.svg and perf/latency.svg.

Only the part of RESULTS.md between `<!-- figures:begin -->` and
`<!-- figures:end -->` is rewritten; the text around it is kept.

Usage: python3 perf/report.py [RESULTS_DIR]
"""

import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results")
SERVERS = ["shardtls", "haproxy", "nginx"]
COLORS = {"shardtls": "#1f77b4", "haproxy": "#d62728", "nginx": "#2ca02c"}


def load(server, scenario):
    try:
        with open(os.path.join(RESULTS, f"{server}-{scenario}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def metric(server, scenario, name):
    d = load(server, scenario)
    v = d and d.get("metrics", {}).get(name)
    return v["value"] if v else None


def lat(server, scenario, name, q):
    d = load(server, scenario)
    return d and d.get("latency", {}).get(name, {}).get(q)


def fmt(v, kind):
    if v is None:
        return "n/a"
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
    return f"{v}"


def ratio(a, b, lower_is_better):
    if a is None or b is None or a == 0 or b == 0:
        return "n/a"
    r = b / a if lower_is_better else a / b
    return f"{r:.2f}x"


def rates():
    found = set()
    for f in glob.glob(os.path.join(RESULTS, "*-latency-*.json")):
        try:
            found.add(int(f.rsplit("-", 1)[1].split(".")[0]))
        except ValueError:
            pass
    return sorted(found)


def row(label, values, kind, lower_is_better=False):
    s, h, n = values
    return (
        f"| {label} | {fmt(s, kind)} | {fmt(h, kind)} | {fmt(n, kind)} | "
        f"{ratio(s, h, lower_is_better)} | {ratio(s, n, lower_is_better)} |"
    )


def per_core_table():
    out = [
        "| per server core | shardtls | HAProxy | nginx | vs HAProxy | vs nginx |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    m = lambda sc, k: [metric(s, sc, k) for s in SERVERS]
    out.append(row("full handshakes/s (TLS 1.3, ECDSA P-256, X25519)", m("handshake", "handshakes_per_s_per_server_core"), "rate"))
    out.append(row("full handshakes + one request/s", m("handshake-request", "handshakes_per_s_per_server_core"), "rate"))
    out.append(row("resumed handshakes/s", m("resume", "handshakes_per_s_per_server_core"), "rate"))
    out.append(row("resumption hit rate", m("resume", "resumption_hit_rate"), "pct"))
    for d in ["up", "both", "down"]:
        out.append(row(f"bulk {d}, GB/s", m(f"bulk-{d}", "gbytes_per_s_per_server_core"), "gb"))
        out.append(row(f"bulk {d}, server CPU ns per byte", m(f"bulk-{d}", "server_cpu_ns_per_byte"), "ns", True))
    for r in rates():
        sc = f"latency-{r}"
        out.append(row(f"requests/s at {r:,}/s offered", m(sc, "requests_per_s_per_server_core"), "rate"))
        for q, qn in [("p50", "p50"), ("p99", "p99"), ("p99_9", "p99.9")]:
            out.append(row(f"  latency {qn} at {r:,}/s, us", [lat(s, sc, "request", q) for s in SERVERS], "us", True))
    out.append(row("memory per idle TLS connection, bytes", m("idle", "server_bytes_per_connection"), "bytes", True))
    out.append("")
    out.append("Ratios are shardtls over the peer where higher is better, and the peer over shardtls for CPU per byte, latency and memory, so a ratio above 1 always means shardtls did better.")
    return out


def absolute_table():
    out = [
        "| absolute (one load-generator core) | shardtls | HAProxy | nginx |",
        "| --- | ---: | ---: | ---: |",
    ]
    for sc, k, label, kind in [
        ("handshake", "handshakes_per_s", "full handshakes/s", "rate"),
        ("handshake", "server_cores_busy", "  server cores busy", "gb"),
        ("resume", "handshakes_per_s", "resumed handshakes/s", "rate"),
        ("resume", "server_cores_busy", "  server cores busy", "gb"),
        ("bulk-down", "gbytes_per_s", "bulk down GB/s", "gb"),
        ("bulk-down", "server_cores_busy", "  server cores busy", "gb"),
    ]:
        v = [metric(s, sc, k) for s in SERVERS]
        out.append(f"| {label} | " + " | ".join(fmt(x, kind) for x in v) + " |")
    return out


def rotate_table():
    d = load("shardtls", "rotate")
    if not d:
        return ["rotate: n/a"]
    m = {k: v["value"] for k, v in d["metrics"].items()}
    p = d.get("latency", {}).get("propagation", {})
    hs = d.get("latency", {}).get("handshake", {})
    base = lat("shardtls", "handshake", "handshake", "p99")
    return [
        "| rotate (shardtls) | value |",
        "| --- | ---: |",
        f"| changes applied (refused) | {m.get('changes_applied', 0):.0f} ({m.get('changes_refused', 0):.0f}) |",
        f"| admin round trip p50 / p99, us | {fmt(p.get('p50'), 'us')} / {fmt(p.get('p99'), 'us')} |",
        f"| errors on established connections | {m.get('established_errors', 0):.0f} |",
        f"| resumptions across a change: attempted / succeeded | {m.get('resumptions_attempted_across_change', 0):.0f} / {m.get('resumptions_across_change_succeeded', 0):.0f} |",
        f"| handshakes failed | {m.get('handshakes_failed', 0):.0f} |",
        f"| handshake p99 during rotation vs without, us | {fmt(hs.get('p99'), 'us')} vs {fmt(base, 'us')} |",
    ]


def problems():
    out = []
    for f in sorted(glob.glob(os.path.join(RESULTS, "*-*.json"))):
        try:
            d = json.load(open(f))
        except ValueError:
            continue
        name = os.path.basename(f)[:-5]
        broken = [k for k, v in d.get("invariants", {}).items() if not v]
        errs = d.get("metrics", {}).get("errors", {}).get("value", 0)
        if broken or not d.get("ok", True) or errs:
            out.append(f"- {name}: " + ", ".join(broken + ([f"{errs:.0f} errors"] if errs else [])))
    return out or ["- none: every scenario passed its invariants with 0 errors"]


def bar_svg(path):
    groups = [("handshake", "full"), ("handshake-request", "full + request"), ("resume", "resumed")]
    vals = {(g, s): metric(s, g, "handshakes_per_s_per_server_core") or 0 for g, _ in groups for s in SERVERS}
    top = max(vals.values()) or 1
    W, H, L, B = 800, 420, 70, 360
    bw, gap = 50, 60
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
             f'<text x="{W/2}" y="24" text-anchor="middle" font-size="16">Handshakes per second per server core (TLS 1.3, ECDSA P-256)</text>',
             f'<line x1="{L}" y1="{B}" x2="{W-20}" y2="{B}" stroke="black"/>',
             f'<line x1="{L}" y1="50" x2="{L}" y2="{B}" stroke="black"/>']
    for i in range(5):
        v = top * i / 4
        y = B - (B - 60) * i / 4
        parts.append(f'<text x="{L-6}" y="{y+4}" text-anchor="end">{v:,.0f}</text>')
        parts.append(f'<line x1="{L}" y1="{y}" x2="{W-20}" y2="{y}" stroke="#ddd"/>')
    x = L + 40
    for g, label in groups:
        for s in SERVERS:
            v = vals[(g, s)]
            h = (B - 60) * v / top
            parts.append(f'<rect x="{x}" y="{B-h}" width="{bw}" height="{h}" fill="{COLORS[s]}"/>')
            parts.append(f'<text x="{x+bw/2}" y="{B-h-4}" text-anchor="middle">{v:,.0f}</text>')
            x += bw + 4
        parts.append(f'<text x="{x-(bw+4)*1.5}" y="{B+18}" text-anchor="middle">{label}</text>')
        x += gap
    for i, s in enumerate(SERVERS):
        parts.append(f'<rect x="{W-170}" y="{60+i*18}" width="12" height="12" fill="{COLORS[s]}"/><text x="{W-152}" y="{70+i*18}">{s}</text>')
    parts.append("</svg>")
    open(path, "w").write("\n".join(parts))


def latency_svg(path):
    rs = rates()
    W, H, L, B = 800, 420, 70, 360
    pts = {(s, q): [(r, lat(s, f"latency-{r}", "request", q)) for r in rs] for s in SERVERS for q in ["p50", "p99"]}
    ys = [v for k in pts.values() for _, v in k if v]
    top = max(ys) if ys else 1
    xr = (min(rs), max(rs)) if rs else (0, 1)
    sx = lambda r: L + (W - 200 - L) * ((r - xr[0]) / ((xr[1] - xr[0]) or 1))
    sy = lambda v: B - (B - 60) * v / top
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
             f'<text x="{W/2}" y="24" text-anchor="middle" font-size="16">Request latency against offered load (solid p99, dashed p50)</text>',
             f'<line x1="{L}" y1="{B}" x2="{W-190}" y2="{B}" stroke="black"/>',
             f'<line x1="{L}" y1="50" x2="{L}" y2="{B}" stroke="black"/>',
             f'<text x="{(L+W-190)/2}" y="{B+36}" text-anchor="middle">offered requests/s</text>',
             f'<text x="16" y="{(B+50)/2}" transform="rotate(-90 16 {(B+50)/2})" text-anchor="middle">microseconds</text>']
    for i in range(5):
        v = top * i / 4
        parts.append(f'<text x="{L-6}" y="{sy(v)+4}" text-anchor="end">{v:,.0f}</text>')
        parts.append(f'<line x1="{L}" y1="{sy(v)}" x2="{W-190}" y2="{sy(v)}" stroke="#ddd"/>')
    for r in rs:
        parts.append(f'<text x="{sx(r)}" y="{B+18}" text-anchor="middle">{r:,}</text>')
    for s in SERVERS:
        for q in ["p50", "p99"]:
            p = [(sx(r), sy(v)) for r, v in pts[(s, q)] if v is not None]
            if len(p) > 1:
                d = " ".join(f"{x:.1f},{y:.1f}" for x, y in p)
                dash = ' stroke-dasharray="6,4"' if q == "p50" else ""
                parts.append(f'<polyline points="{d}" fill="none" stroke="{COLORS[s]}" stroke-width="2"{dash}/>')
    for i, s in enumerate(SERVERS):
        parts.append(f'<rect x="{W-170}" y="{60+i*18}" width="12" height="12" fill="{COLORS[s]}"/><text x="{W-152}" y="{70+i*18}">{s}</text>')
    parts.append("</svg>")
    open(path, "w").write("\n".join(parts))


def main():
    machine = {}
    try:
        machine = json.load(open(os.path.join(RESULTS, "machine.json")))
    except (OSError, ValueError):
        pass
    bar_svg(os.path.join(HERE, "handshakes.svg"))
    latency_svg(os.path.join(HERE, "latency.svg"))
    block = [
        "<!-- figures:begin -->",
        f"Run of {machine.get('date', 'n/a')}: {machine.get('cpu', 'n/a')}, {machine.get('cores', '?')} cores, "
        f"Linux {machine.get('kernel', 'n/a')}; {machine.get('haproxy', 'HAProxy n/a').split(' - ')[0]}; "
        f"{machine.get('nginx', 'nginx n/a')}; {machine.get('openssl', 'OpenSSL n/a').split(' (')[0]}; "
        f"{machine.get('shardtls', 'shardtls')}; key type {machine.get('key_type', '?')}.",
        "",
        *per_core_table(),
        "",
        *absolute_table(),
        "",
        *rotate_table(),
        "",
        "Scenarios with errors or broken invariants:",
        "",
        *problems(),
        "",
        "![handshakes per server core](handshakes.svg)",
        "",
        "![latency against offered load](latency.svg)",
        "<!-- figures:end -->",
    ]
    path = os.path.join(HERE, "RESULTS.md")
    text = open(path).read() if os.path.exists(path) else "<!-- figures:begin -->\n<!-- figures:end -->\n"
    if "<!-- figures:begin -->" not in text:
        text += "\n<!-- figures:begin -->\n<!-- figures:end -->\n"
    head, rest = text.split("<!-- figures:begin -->", 1)
    tail = rest.split("<!-- figures:end -->", 1)[1] if "<!-- figures:end -->" in rest else ""
    open(path, "w").write(head + "\n".join(block) + tail)
    print("\n".join(per_core_table()[:6]))
    print("wrote", path, "perf/handshakes.svg perf/latency.svg")


if __name__ == "__main__":
    main()
