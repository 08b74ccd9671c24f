#!/usr/bin/env python3
"""Per-test cost: where the CPU time of a tiny test goes, shoal against serial pytest.

usage: bench/pertest.py [--tests N | --suite DIR] [-n W] [--repeat R] [--python PY] [--shoal BIN]

Runs, alternating, --repeat times from the suite's directory (all with -p no:cacheprovider -q):

    PY -m pytest --collect-only -q     collect: start-up + collection, the part both pay once
    PY -m pytest                       serial pytest
    shoal -n W --report-json=...       shoal; its run_end event carries the controller's own CPU

and prints, from the medians, per test in microseconds:

    controller   the shoal process alone (decode, bookkeeping, terminal, reports) / tests
    python side  (shoal's CPU with every child - controller - collect) / tests: the workers,
                 and the collector's share after collection (its replay of reports)
    serial       (serial CPU - collect) / tests: pytest's own per-test work
    ratio        python side / serial (target: at most 1.10)

--tests N generates N trivial tests (bench/results/work/tiny-N); --suite DIR measures a real
suite (packaging: $SHOAL_SUITES/src/packaging-26.4). CPU, not wall time, so other load on the
machine hardly moves the figures.
"""

import shlex
import sys

from measure import checked, common_args, env_for, logs_dir, median, shoal_run, suite_dir, suite_options, timed


def main() -> int:
    p = common_args(__doc__)
    suite_options(p)
    args = p.parse_args()
    checked(args)
    cwd = suite_dir(args)
    env = env_for(args)
    logs = logs_dir(args)
    extra = shlex.split(args.pytest_args)
    py = [str(args.python), "-m", "pytest", "-p", "no:cacheprovider", "-q", *extra]
    runs = {"collect": [], "serial": [], "shoal": []}
    for i in range(args.repeat):
        for name, run in (
            ("collect", lambda log: timed(py + ["--collect-only"], cwd, env, log)),
            ("serial", lambda log: timed(py, cwd, env, log)),
            ("shoal", lambda log: shoal_run(args, cwd, env, log, extra)),
        ):
            r = run(logs / f"pertest-{cwd.name}-{name}-{i}.log")
            runs[name].append(r)
            own = f"  controller {sum(r['controller'][k] for k in ('user', 'system')):.2f}s" if "controller" in r else ""
            print(f"  {name:8} #{i}: {r['wall_s']:7.2f}s wall {r['cpu_s']:7.2f}s cpu{own}  load {r['load1_before']:.1f}",
                  file=sys.stderr)

    tests = runs["shoal"][0]["tests"]
    collect = median([r["cpu_s"] for r in runs["collect"]])
    serial = median([r["cpu_s"] for r in runs["serial"]])
    shoal = median([r["cpu_s"] for r in runs["shoal"]])
    controller = median([r["controller"]["user"] + r["controller"]["system"] for r in runs["shoal"]])
    python_side = shoal - controller - collect
    us = 1e6 / tests
    print(f"{cwd.name}: {tests} tests, -n {args.workers}, median of {args.repeat}, CPU seconds")
    print(f"  collect {collect:.2f}  serial {serial:.2f}  shoal (all processes) {shoal:.2f}  controller {controller:.2f}")
    print(f"  per test: controller {controller * us:.1f} us, python side {python_side * us:.1f} us, "
          f"serial {(serial - collect) * us:.1f} us, python side / serial {python_side / (serial - collect):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
