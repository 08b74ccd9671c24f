#!/usr/bin/env python3
"""Draws a `shoal --timeline` trace as an SVG Gantt chart, for a picture without a browser.

One row per worker, one bar per test coloured by its outcome (hover a bar for the test, its
outcome and how long it took), a tick where a worker's process stopped or started again. The
trace viewers (ui.perfetto.dev, chrome://tracing) show more; this is for documents and CI
artifacts. Python 3 standard library only.

    bench/timeline_svg.py t.json -o timeline.svg
"""

import argparse
import json
import math
import sys
from xml.sax.saxutils import escape

COLOURS = {
    "passed": "#4caf50",
    "failed": "#e53935",
    "error": "#8e24aa",
    "skipped": "#9e9e9e",
    "xfailed": "#bdbdbd",
    "xpassed": "#fdd835",
    "unfinished": "#ff9800",
}
ROW = 26
BAR = 18
LEFT = 56
TOP = 34
AXIS = 30
LEGEND = 24


def tick_step(seconds, width):
    """A round step in seconds that puts a tick every 80 pixels or so."""
    raw = seconds * 80 / width if seconds > 0 else 1
    power = 10 ** math.floor(math.log10(raw))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= raw)


def draw(trace, width, title):
    events = trace["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    tests = [e for e in events if e.get("ph") == "X" and e.get("cat") == "test"]
    marks = [e for e in events if e.get("ph") == "i"]
    rows = {tid: n for n, tid in enumerate(sorted(names))}
    end = max([e["ts"] + e["dur"] for e in tests] + [e["ts"] for e in marks] + [1])
    plot = width - LEFT - 10
    x = lambda ts: LEFT + ts * plot / end  # noqa: E731
    height = TOP + len(rows) * ROW + AXIS + LEGEND
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{LEFT}" y="20" font-size="14">{escape(title)}</text>',
    ]
    for tid, row in rows.items():
        y = TOP + row * ROW
        out.append(f'<rect x="{LEFT}" y="{y}" width="{plot}" height="{BAR}" fill="#f4f4f4"/>')
        out.append(f'<text x="{LEFT - 8}" y="{y + 13}" text-anchor="end">{escape(names[tid])}</text>')
    for e in tests:
        y = TOP + rows[e["tid"]] * ROW
        outcome = e["args"]["outcome"]
        tip = f'{e["name"]}: {outcome}, {e["dur"] / 1e6:.3f} s on {e["args"]["worker"]}'
        out.append(
            f'<rect x="{x(e["ts"]):.2f}" y="{y}" width="{max(e["dur"] * plot / end, 0.5):.2f}" '
            f'height="{BAR}" fill="{COLOURS.get(outcome, "#607d8b")}" stroke="white" '
            f'stroke-width="0.3"><title>{escape(tip)}</title></rect>'
        )
    for e in marks:
        y = TOP + rows[e["tid"]] * ROW
        stop = e["name"] == "worker stopped"
        colour = "#212121" if stop else "#1e88e5"
        tip = f'{e["args"]["worker"]} {e["name"][7:]}' + (f' ({e["args"]["exit"]})' if stop else "")
        out.append(
            f'<line x1="{x(e["ts"]):.2f}" x2="{x(e["ts"]):.2f}" y1="{y - 3}" y2="{y + BAR + 3}" '
            f'stroke="{colour}" stroke-width="1.5"><title>{escape(tip)}</title></line>'
        )
    axis = TOP + len(rows) * ROW + 4
    out.append(f'<line x1="{LEFT}" x2="{LEFT + plot}" y1="{axis}" y2="{axis}" stroke="#424242"/>')
    seconds = end / 1e6
    step = tick_step(seconds, plot)
    for n in range(int(seconds / step) + 1):
        at = LEFT + n * step * 1e6 * plot / end
        out.append(f'<line x1="{at:.2f}" x2="{at:.2f}" y1="{axis}" y2="{axis + 4}" stroke="#424242"/>')
        out.append(f'<text x="{at:.2f}" y="{axis + 16}" text-anchor="middle">{n * step:g} s</text>')
    legend = axis + AXIS
    at = LEFT
    for outcome, colour in COLOURS.items():
        out.append(f'<rect x="{at}" y="{legend - 10}" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{at + 14}" y="{legend}">{outcome}</text>')
        at += 20 + 7 * len(outcome)
    out.append(f'<line x1="{at}" x2="{at}" y1="{legend - 11}" y2="{legend + 1}" stroke="#1e88e5" stroke-width="1.5"/>')
    out.append(f'<text x="{at + 5}" y="{legend}">worker started</text>')
    at += 110
    out.append(f'<line x1="{at}" x2="{at}" y1="{legend - 11}" y2="{legend + 1}" stroke="#212121" stroke-width="1.5"/>')
    out.append(f'<text x="{at + 5}" y="{legend}">worker stopped</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", help="the file `shoal --timeline` wrote")
    parser.add_argument("-o", "--output", help="the SVG file (default: stdout)")
    parser.add_argument("--width", type=int, default=900, help="pixels (default: 900)")
    parser.add_argument("--title", default=None, help="the chart's title (default: the file)")
    args = parser.parse_args()
    with open(args.trace, encoding="utf-8") as f:
        trace = json.load(f)
    svg = draw(trace, args.width, args.title or args.trace)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(svg)
    else:
        sys.stdout.write(svg)


if __name__ == "__main__":
    main()
