"""Draw deploy/grafana/dashboard.json as an SVG from a Prometheus server's answers: each panel's
queries over a time range (query_range), as lines on a grid laid out as the dashboard's. Not
Grafana, and it says so on the picture: a way to show the dashboard's queries on real data
where no Grafana runs.

`.venv/bin/python -m soak.dashboard PROMETHEUS_URL START END OUT.svg` (times: epoch seconds).
"""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path

import httpx

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboard.json"
CELL = 40  # pixels per grid unit across (24 units) and per 2 units down
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def series(
    url: str, expr: str, legend: str, start: float, end: float
) -> list[tuple[str, list[float]]]:
    """Each series `expr` gives over [start, end], named by `legend` as Grafana would."""
    step = max(1.0, (end - start) / 200)
    answer = httpx.get(
        f"{url}/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": step},
        timeout=30,
    ).json()
    found = []
    for result in answer.get("data", {}).get("result", []):
        by_time = {float(t): float(v) for t, v in result["values"]}
        points = [by_time.get(start + n * step, float("nan")) for n in range(201)]
        found.append((_legend(legend, result["metric"]), points))
    return found


def _legend(legend: str, metric: dict[str, str]) -> str:
    """`legend` with each {{label}} replaced by the series' value of it."""
    for name, value in metric.items():
        legend = legend.replace("{{" + name + "}}", value)
    return legend or ", ".join(metric.values()) or "all"


def render(url: str, start: float, end: float) -> str:
    dashboard = json.loads(DASHBOARD.read_text())
    width = 24 * CELL
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"]) * CELL // 2
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height + 30}" fill="#111217"/>',
        f'<text x="8" y="{height + 20}" fill="#999">{html.escape(dashboard["title"])}: a '
        "rendering of deploy/grafana/dashboard.json from Prometheus query_range answers over "
        f"a make soak run ({(end - start) / 60:.0f} min), not a Grafana screenshot</text>",
    ]
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        x, y = grid["x"] * CELL, grid["y"] * CELL // 2
        w, h = grid["w"] * CELL, grid["h"] * CELL // 2
        lines: list[tuple[str, list[float]]] = []
        for target in panel["targets"]:
            legend = target.get("legendFormat", "")
            lines += series(url, target["expr"], legend, start, end)
        parts.append(
            _panel(panel["title"], panel["fieldConfig"]["defaults"]["unit"], lines, x, y, w, h)
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _panel(
    title: str, unit: str, lines: list[tuple[str, list[float]]], x: int, y: int, w: int, h: int
) -> str:
    out = [
        f'<g transform="translate({x + 4},{y + 4})">',
        f'<rect width="{w - 8}" height="{h - 8}" fill="#181b1f" stroke="#2c3235"/>',
        f'<text x="8" y="16" fill="#ccc" font-weight="bold">{html.escape(title)}</text>',
    ]
    values = [v for _, points in lines for v in points if v == v]
    top = max(values, default=1.0) or 1.0
    plot_w, plot_h, left, upper = w - 80, h - 70, 56, 26
    out.append(f'<text x="4" y="{upper + 8}" fill="#888">{_short(top)}{_unit(unit)}</text>')
    out.append(f'<text x="4" y="{upper + plot_h}" fill="#888">0</text>')
    for n, (name, points) in enumerate(lines[:7]):
        colour = COLOURS[n % len(COLOURS)]
        path, pen_down = [], False
        for i, value in enumerate(points):
            if value != value:  # NaN: a gap
                pen_down = False
                continue
            px = left + plot_w * i / (len(points) - 1)
            py = upper + plot_h * (1 - min(value, top) / top)
            path.append(f"{'L' if pen_down else 'M'}{px:.1f},{py:.1f}")
            pen_down = True
        if path:
            out.append(f'<path d="{" ".join(path)}" fill="none" stroke="{colour}"/>')
        legend_y = upper + plot_h + 16 + 12 * (n // 3)
        out.append(
            f'<text x="{left + (n % 3) * (plot_w // 3)}" y="{legend_y}" fill="{colour}">'
            f"{html.escape(name[:40])}</text>"
        )
    if not lines:
        out.append(f'<text x="{left}" y="{upper + plot_h // 2}" fill="#666">no data</text>')
    out.append("</g>")
    return "\n".join(out)


def _short(value: float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.1f}{suffix}"
    return f"{value:.2g}"


def _unit(unit: str) -> str:
    return {"s": " s", "ops": "/s", "Bps": "B/s"}.get(unit, "")


if __name__ == "__main__":
    prometheus, begin, finish, target = sys.argv[1:5]
    Path(target).write_text(render(prometheus, float(begin), float(finish)))
