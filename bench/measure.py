"""What bench/pertest.py, bench/memory.py and bench/fork.py share: a suite of N trivial tests,
the interpreter and binary to run, and one shoal run that reports the controller's own figures.

The controller's figures come from its `--report-json` `run_end` event (`controller`: its own
CPU seconds and peak RSS, read from /proc/self as the run ends). A parent cannot measure them
from outside: wait4 adds every child shoal reaped (the collector, so every worker) to shoal's
CPU time, and a process's peak RSS is gone once it exits.
"""

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from run import BENCH_DIR, REPO_ROOT, run_command

# The shape of synthetic.py's `tiny` suite: one parametrized trivial test per file.
TESTS_PER_FILE = 200


def write_tiny(out: Path, tests: int) -> Path:
    """A suite of `tests` trivial passing tests under `out` (kept if it is already there)."""
    marker = out / "TESTS"
    if marker.is_file() and marker.read_text().strip() == str(tests):
        return out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("test_*.py"):
        old.unlink()
    files, rest = divmod(tests, TESTS_PER_FILE)
    sizes = [TESTS_PER_FILE] * files + ([rest] if rest else [])
    for i, size in enumerate(sizes):
        (out / f"test_tiny_{i:04}.py").write_text(
            f"import pytest\n\n\n@pytest.mark.parametrize('x', range({size}))\n"
            "def test_tiny(x):\n    assert x >= 0\n")
    # Its own rootdir, so no ini file above it changes what runs.
    (out / "pytest.ini").write_text("[pytest]\n")
    marker.write_text(f"{tests}\n")
    return out


def common_args(description: str) -> argparse.ArgumentParser:
    """The options every measurement script takes."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    suites = os.environ.get("SHOAL_SUITES")
    default_python = Path(suites) / "venv" / "bin" / "python" if suites else REPO_ROOT / ".venv" / "bin" / "python"
    p.add_argument("--python", type=Path, default=default_python,
                   help="interpreter with pytest (default $SHOAL_SUITES/venv/bin/python, else .venv/bin/python)")
    p.add_argument("--shoal", type=Path, default=REPO_ROOT / "target" / "release" / "shoal",
                   help="shoal binary (default target/release/shoal)")
    p.add_argument("-n", dest="workers", type=int, default=2, help="shoal workers (default 2)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each command (default 3), alternating")
    p.add_argument("--work-dir", type=Path, default=BENCH_DIR / "results" / "work",
                   help="where generated suites and logs go (default bench/results/work)")
    p.add_argument("--pytest-args", default="", help="extra pytest arguments, one shell-quoted string")
    return p


def suite_options(p: argparse.ArgumentParser) -> None:
    """--tests N (generated) or --suite DIR (a real one), for the scripts that take either."""
    p.add_argument("--tests", type=int, default=100_000, help="trivial tests to generate (default 100000)")
    p.add_argument("--suite", type=Path, help="measure this suite directory instead")


def suite_dir(args) -> Path:
    """The directory of the suite --suite or --tests names (generated if need be)."""
    if args.suite:
        return args.suite.resolve()
    return write_tiny(args.work_dir / f"tiny-{args.tests}", args.tests)


def logs_dir(args) -> Path:
    logs = args.work_dir / "logs"
    logs.mkdir(exist_ok=True)
    return logs


def checked(args) -> None:
    """Exits with a message where the interpreter or the binary is missing."""
    args.python = Path(os.path.abspath(args.python))
    args.shoal = args.shoal.resolve()
    for what, path in (("python", args.python), ("shoal binary", args.shoal)):
        if not os.access(path, os.X_OK):
            sys.exit(f"{Path(sys.argv[0]).name}: {what} not found: {path}")
    args.work_dir = args.work_dir.resolve()
    args.work_dir.mkdir(parents=True, exist_ok=True)


def env_for(args) -> dict:
    env = dict(os.environ)
    env["PATH"] = str(args.python.parent) + os.pathsep + env.get("PATH", "")
    env.pop("PYTEST_XDIST_AUTO_NUM_WORKERS", None)
    # The warm-up writes the bytecode and assertion-rewrite caches only where Python may.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def timed(cmd, cwd, env, log_path):
    """One command through run.py's runner: wall and CPU (with the children it reaped),
    exit code, summary. Exits if it did not end normally (exit code 0)."""
    r = run_command(cmd, cwd, env, 3600, log_path)
    if r["timed_out"] or r["rc"] != 0:
        sys.exit(f"failed to run {' '.join(map(str, cmd))}: rc={r['rc']}, see {log_path}")
    return r


def shoal_run(args, cwd, env, log_path, extra=()):
    """One `shoal -n W` run; the result has `controller` (its run_end figures) added."""
    events = log_path.with_suffix(".events.jsonl")
    cmd = [str(args.shoal), "--python", str(args.python), "-n", str(args.workers),
           "-p", "no:cacheprovider", "-q", f"--report-json={events}", *extra]
    r = timed(cmd, cwd, env, log_path)
    end = json.loads(events.read_text().splitlines()[-1])
    if "controller" not in end:
        sys.exit(f"failed to read the controller's figures: no `controller` in {events} "
                 "(a shoal without them, or not Linux)")
    r["controller"] = end["controller"]
    r["tests"] = sum(end["counts"].values())
    return r


def median(values):
    return statistics.median(values)


