#!/usr/bin/env python3
"""Memory: the controller's peak RSS against the number of tests, as bytes per test.

usage: bench/memory.py [--sizes 10000,30000,100000] [-n W] [--repeat R] [--python PY] [--shoal BIN]

For each size it generates that many trivial tests (bench/results/work/tiny-N), runs
`shoal -n W -p no:cacheprovider -q --report-json=...` --repeat times and takes the median of
the controller's peak RSS (`VmHWM` of the shoal process alone, from run_end's `controller`).
It prints each size's peak and peak / tests, then the least-squares line through the points:
its slope is the cost of one more test in bytes, its intercept the controller's fixed cost,
and the largest distance of a point from the line, as a share of that point, says how linear
the growth is.
"""

import shlex
import sys

from measure import checked, common_args, env_for, logs_dir, median, shoal_run, write_tiny


def main() -> int:
    p = common_args(__doc__)
    p.add_argument("--sizes", default="10000,30000,100000", help="test counts (default 10000,30000,100000)")
    args = p.parse_args()
    checked(args)
    sizes = [int(s) for s in args.sizes.split(",")]
    env = env_for(args)
    logs = logs_dir(args)
    extra = shlex.split(args.pytest_args)
    suites = {n: write_tiny(args.work_dir / f"tiny-{n}", n) for n in sizes}
    peaks = {n: [] for n in sizes}
    for i in range(args.repeat):
        for n in sizes:
            r = shoal_run(args, suites[n], env, logs / f"memory-{n}-{i}.log", extra)
            peaks[n].append(r["controller"]["peak_rss"])
            print(f"  {n:7} tests #{i}: peak {r['controller']['peak_rss'] / 2**20:7.1f} MiB  "
                  f"{r['wall_s']:6.2f}s wall  load {r['load1_before']:.1f}", file=sys.stderr)
    points = [(n, median(peaks[n])) for n in sizes]
    print(f"controller peak RSS, -n {args.workers}, median of {args.repeat}")
    for n, peak in points:
        print(f"  {n:7} tests: {peak / 2**20:7.1f} MiB, {peak / n:7.0f} bytes per test")
    if len(points) >= 2:
        mx = sum(n for n, _ in points) / len(points)
        my = sum(b for _, b in points) / len(points)
        slope = sum((n - mx) * (b - my) for n, b in points) / sum((n - mx) ** 2 for n, _ in points)
        intercept = my - slope * mx
        off = max(abs(b - (intercept + slope * n)) / b for n, b in points)
        print(f"  line: {slope:.0f} bytes per test + {intercept / 2**20:.1f} MiB; "
              f"farthest point {off:.1%} off the line")
    return 0


if __name__ == "__main__":
    sys.exit(main())
