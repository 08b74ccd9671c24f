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
    ratio        python side / serial

and, from bench/probe/loop_probe.py (loaded into serial pytest and shoal with -p loop_probe),
the test loop alone, from each process's first test to its last, per test:

    serial loop      serial pytest's loop: pytest's protocol and its loop's own work
    worker loop      the workers' loops: pytest's protocol, and shoal's own work between tests
                     (taking the next test, sending the reports), which is given apart
    ratio            worker loop / serial loop (target: at most 1.10)

The python side also holds what a run pays once (forking, each worker's session start and
end, the collector's end), which the loop leaves out; at -n 2 on two cores the two workers
also slow each other down (shared caches and memory bandwidth), which -n 1 leaves out.

--tests N generates N trivial tests (bench/results/work/tiny-N); --suite DIR measures a real
suite (packaging: $SHOAL_SUITES/src/packaging-26.4). CPU, not wall time, so other load on the
machine hardly moves the figures.
"""

import json
import os
import shlex
import sys

from measure import checked, common_args, env_for, logs_dir, median, shoal_run, suite_dir, suite_options, timed
from run import BENCH_DIR


def main() -> int:
    p = common_args(__doc__)
    suite_options(p)
    args = p.parse_args()
    checked(args)
    cwd = suite_dir(args)
    env = env_for(args)
    env["PYTHONPATH"] = str(BENCH_DIR / "probe") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    logs = logs_dir(args)
    extra = [*shlex.split(args.pytest_args), "-p", "loop_probe"]
    py = [str(args.python), "-m", "pytest", "-p", "no:cacheprovider", "-q", *extra]
    runs = {"collect": [], "serial": [], "shoal": []}
    loops = {"serial": [], "shoal": []}
    for i in range(args.repeat):
        for name, run in (
            ("collect", lambda log: timed(py + ["--collect-only"], cwd, env, log)),
            ("serial", lambda log: timed(py, cwd, env, log)),
            ("shoal", lambda log: shoal_run(args, cwd, env, log, extra)),
        ):
            log = logs / f"pertest-{cwd.name}-{name}-{i}.log"
            probe = log.with_suffix(".loop.jsonl")
            probe.unlink(missing_ok=True)
            env["LOOP_PROBE_OUT"] = str(probe)
            r = run(log)
            if name in loops:
                loops[name].append(loop_figures(probe))
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
    serial_loop = median([loop for loop, _ in loops["serial"]])
    worker_loop = median([loop for loop, _ in loops["shoal"]])
    worker_own = median([loop - protocol for loop, protocol in loops["shoal"]])
    print(f"  test loop per test: serial {serial_loop:.1f} us, workers {worker_loop:.1f} us "
          f"(shoal's own {worker_own:.1f} us), workers / serial {worker_loop / serial_loop:.3f}")
    return 0


def loop_figures(probe) -> tuple:
    """(loop, protocol) CPU per test in microseconds, over the processes that ran tests."""
    lines = [json.loads(line) for line in probe.read_text().splitlines()]
    tests = sum(line["tests"] for line in lines)
    loop = sum(line["loop_cpu"] for line in lines)
    protocol = sum(line["protocol_cpu"] for line in lines)
    return loop * 1e6 / tests, protocol * 1e6 / tests


if __name__ == "__main__":
    sys.exit(main())
