#!/usr/bin/env python3
"""The shared queue's overhead: one build of N nodes on a local Redis against one local run
with the same workers in all.

    bench/queue.py --suites-dir .suites --only packaging            # the comparison
    bench/queue.py --nodes 2 --workers 1 build --url redis://127.0.0.1:6379 \\
        --dir SUITE_DIR [-- PYTEST ARGS]                            # one build, timed outside

For each suite the comparison starts a `redis-server` on a free port of 127.0.0.1, then runs,
alternating, `--repeat` times:

    SHOAL --python VENV/bin/python -n NODES*WORKERS -p no:cacheprovider -q            (local)
    NODES x  SHOAL ... -n WORKERS --queue URL --build <fresh id> -p no:cacheprovider -q  (queue)

and prints the median wall time of each (the queue's: until its last node exits), their
ratio, and the Redis round trips per test that the nodes report on their last line. The
nodes run on this one machine, so the queue's wall time also pays for NODES collections
sharing its cores, which separate CI machines would not. `shoal report` checks, untimed,
that the build's counts equal the local run's. `build` runs one build and nothing else, for
an outside timer.

Python 3 standard library only; `redis-server` must be on PATH.
"""

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from suites import read_suites

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
SHARED_SUITES = REPO_ROOT.parent / "shared" / "suites"
TRIPS = re.compile(r"ran (\d+) tests .* in (\d+) round trips")
STATS = re.compile(r"^=* ?((?:\d+ \w+(?:, )?)+) in [\d.]+s", re.MULTILINE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    return server, f"redis://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    server.kill()
    sys.exit("bench/queue.py: redis-server did not start")


def shoal_command(shoal: str, python: str, workers: int, args: list[str]) -> list[str]:
    return [shoal, "--python", python, "-n", str(workers), "-p", "no:cacheprovider", "-q", *args]


def run_build(shoal, python, url, nodes, workers, directory, args) -> tuple[float, int, int, list[str]]:
    """One build: (wall seconds, tests the nodes ran, round trips, the nodes' outputs)."""
    build = uuid.uuid4().hex
    command = shoal_command(shoal, python, workers, ["--queue", url, "--build", build, *args])
    started = time.monotonic()
    procs = [
        subprocess.Popen(command, cwd=directory, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for _ in range(nodes)
    ]
    outputs = [p.communicate()[0] for p in procs]
    wall = time.monotonic() - started
    tests = trips = 0
    for out in outputs:
        match = TRIPS.search(out)
        if match:
            tests += int(match[1])
            trips += int(match[2])
    report = subprocess.run(
        [shoal, "report", "--queue", url, "--build", build, "--timeout", "60"],
        cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ).stdout
    return wall, tests, trips, [*outputs, report]


def stats(output: str) -> str:
    found = STATS.findall(output)
    return found[-1] if found else "?"


def compare(args) -> int:
    shared = Path(args.shared_suites)
    suites_dir = Path(args.suites_dir).resolve()
    suites = read_suites(suites_dir, None, shared)
    only = set(args.only.split(",")) if args.only else None
    python = str(suites_dir / "venv" / "bin" / "python")
    total = args.nodes * args.workers
    flagged = False
    print(f"{'suite':<12} {'local -n %d' % total:>12} {'queue %dx-n %d' % (args.nodes, args.workers):>14}"
          f" {'queue/local':>11} {'trips/test':>10}  counts")
    with tempfile.TemporaryDirectory() as tmp:
        server, url = start_redis(Path(tmp))
        try:
            for suite in suites:
                if only and suite["name"] not in only:
                    continue
                directory = suite["dir"]
                local_walls, queue_walls, ratios = [], [], []
                trips_per_test, agree = [], True
                for _ in range(args.repeat):
                    started = time.monotonic()
                    local = subprocess.run(shoal_command(args.shoal, python, total, []), cwd=directory,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                    local_walls.append(time.monotonic() - started)
                    wall, tests, trips, outputs = run_build(args.shoal, python, url, args.nodes,
                                                            args.workers, directory, [])
                    queue_walls.append(wall)
                    ratios.append(wall / local_walls[-1])
                    trips_per_test.append(trips / max(tests, 1))
                    agree &= stats(outputs[-1]) == stats(local.stdout) != "?"
                flagged |= not agree
                print(f"{suite['name']:<12} {statistics.median(local_walls):>11.2f}s {statistics.median(queue_walls):>13.2f}s"
                      f" {statistics.median(ratios):>11.3f} {statistics.median(trips_per_test):>10.4f}"
                      f"  {'same' if agree else '!! differ'}")
        finally:
            server.kill()
            server.wait()
    return 1 if flagged else 0


def build(args) -> int:
    wall, tests, trips, outputs = run_build(args.shoal, args.python, args.url, args.nodes, args.workers,
                                            args.dir, args.pytest_args)
    print(f"{wall:.2f}s, {tests} tests, {trips} round trips ({trips / max(tests, 1):.4f} per test); {stats(outputs[-1])}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shoal", default=str(REPO_ROOT / "target" / "release" / "shoal"))
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--workers", type=int, default=1, help="workers per node")
    sub = p.add_subparsers(dest="mode")
    one = sub.add_parser("build", help="run one build of --nodes nodes")
    one.add_argument("--url", required=True)
    one.add_argument("--dir", required=True)
    one.add_argument("--python", default=shutil.which("python3"))
    one.add_argument("pytest_args", nargs="*")
    p.add_argument("--suites-dir", default=os.environ.get("SHOAL_SUITES"))
    p.add_argument("--shared-suites", default=str(SHARED_SUITES))
    p.add_argument("--only", default=None, help="comma-separated suite names")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    if args.mode == "build":
        return build(args)
    if not args.suites_dir:
        p.error("give --suites-dir (../shared/suites/setup.sh DIR) or set SHOAL_SUITES")
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())
