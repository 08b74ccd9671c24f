#!/usr/bin/env python3
"""Benchmark shoal against serial pytest, pytest-xdist and the lower bound of any runner.

For every selected suite this runs, from the suite's own directory,

    VENV/bin/python -m pytest --collect-only -q -p no:cacheprovider          (collect)
    VENV/bin/python -m pytest -p no:cacheprovider -q --junitxml=...          (serial)
    VENV/bin/python -m pytest -n N -p no:cacheprovider -q --junitxml=...     (xdist)
    SHOAL --python VENV/bin/python -n N -p no:cacheprovider -q --junitxml=... (shoal)
    SHOAL ... -o cache_dir=RESULTS/cache/SUITE -q --junitxml=...              (shoal+h)

(shoal+h: shoal with a durations history of its own, warmed by one untimed run; left out
with --no-history; and, with --baseline OTHER_SHOAL, the shoal command with another build),
alternating them --repeat times, and measures the wall time of each command. From the serial
run's JUnit durations it computes the lower bound any runner could reach at N workers,

    LB    = collect + max(sum(durations) / N, longest)
    ideal = collect + max((serial - collect) / N, longest)

(ideal: a runner that keeps pytest's own per-test work), then prints per suite the median
wall times, LB, ideal, the ratios shoal/xdist, shoal/LB and shoal/ideal (below 1 against
xdist: shoal is faster), and the geometric mean of shoal/xdist. It records every exit code
and the final pytest summary line, and checks that shoal's outcome counts (passed, failed,
skipped, errors, xfailed, xpassed) agree with xdist's. Rows where they do not, or where
shoal crashed or timed out, are flagged with '!!'.

Results go to bench/results/<timestamp>.json, the full output of every
command to bench/results/<timestamp>/logs/.

The real suites come from ../shared/suites/setup.sh DIR (pass DIR with
--suites-dir or $SHOAL_SUITES); the synthetic ones from
../shared/suites/synthetic.py (--synthetic or --synthetic-dir).

Exit status: 0 if nothing was flagged, 1 if some row was flagged, 2 on usage
errors.
"""

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from suites import read_suites

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
SHARED_SUITES = REPO_ROOT.parent / "shared" / "suites"

# Per-suite extras that suites.tsv does not say. Keys:
#   args:        extra pytest arguments given to every runner
#   subdir:      run from this directory below the suite's directory
#   min_timeout: the per-command timeout is at least this many seconds
# Every real suite currently runs with no extra arguments from its top
# directory (click's and packaging's deselection comes from their own addopts).
SUITE_EXTRAS = {
    "packaging": {"min_timeout": 1800},  # 64k tiny tests
}

# The synthetic suites written by synthetic.py, with their test counts.
SYNTHETIC = [
    ("tiny", 20000, "20k trivial tests: per-test overhead"),
    ("skewed", 300, "heavy-tailed sleeps: scheduling quality"),
    ("heavy", 200, "1.5 s conftest import: start-up cost"),
    ("scoped", 400, "module-scoped 0.2 s fixtures: scheduler locality"),
]

# The counts that must agree between runners. Warnings and deselected are
# recorded but only reported as notes.
OUTCOMES = ("passed", "failed", "errors", "skipped", "xfailed", "xpassed", "not run")

# "2 failed, 43 passed, 255 not run in 3.66s" (labels may be several words), "no tests ran in 0.01s"
SUMMARY_RE = re.compile(r"(\d+ [a-z][a-z ]*?(?:, \d+ [a-z][a-z ]*?)*|no tests ran) in (\d+(?:\.\d+)?)s\b")
COUNT_RE = re.compile(r"(\d+) ([a-z][a-z ]*)")
NORMALISE = {"error": "errors", "warning": "warnings"}

TAIL_LINES = 40


def log(msg=""):
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__,
        epilog="Example: bench/run.py --suites-dir /work/suites --skip packaging --synthetic --repeat 1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--suites-dir", type=Path, default=os.environ.get("SHOAL_SUITES"),
                   help="output dir of ../shared/suites/setup.sh (holds venv/ and src/); "
                        "default $SHOAL_SUITES")
    p.add_argument("--suites-tsv", type=Path, default=None,
                   help="suite list (default: ../shared/suites/suites.tsv, else SUITES_DIR/suites.tsv, "
                        "else every directory in SUITES_DIR/src)")
    p.add_argument("--python", type=Path, default=None,
                   help="interpreter with pytest + pytest-xdist (default SUITES_DIR/venv/bin/python)")
    p.add_argument("--shoal", type=Path, default=REPO_ROOT / "target" / "release" / "shoal",
                   help="shoal binary (default: target/release/shoal in the repo)")
    p.add_argument("--baseline", type=Path, default=None,
                   help="another shoal binary (a build of an earlier commit) timed in the same "
                        "alternation; the table adds baseline/shoal (> 1: shoal got faster)")
    p.add_argument("-n", dest="workers", type=int, default=2, help="workers for xdist and shoal (default 2)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per runner and suite (default 3)")
    p.add_argument("--only", default=None,
                   help="comma-separated suite names to run (real or synthetic, e.g. markupsafe,tiny)")
    p.add_argument("--skip", default=None, help="comma-separated suite names to leave out (e.g. packaging)")
    p.add_argument("--no-real", action="store_true", help="run no real suites (only synthetic ones)")
    p.add_argument("--synthetic", action="store_true",
                   help="also generate the synthetic suites into a temporary dir and run them")
    p.add_argument("--synthetic-dir", type=Path, default=None,
                   help="run the synthetic suites from this dir (generated there if missing)")
    p.add_argument("--synthetic-script", type=Path, default=SHARED_SUITES / "synthetic.py",
                   help="generator for the synthetic suites (default ../shared/suites/synthetic.py)")
    p.add_argument("--no-history", action="store_true",
                   help="leave out shoal+h, the shoal runs with a durations history of their own")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="per-command timeout in seconds (default 600; packaging gets at least 1800)")
    p.add_argument("--no-warmup", action="store_true",
                   help="skip the untimed 'pytest --collect-only' per suite that writes bytecode caches "
                        "before the first timed run")
    p.add_argument("--pytest-args", default="",
                   help="extra arguments (one shell-quoted string) for every runner, e.g. '-x'")
    p.add_argument("--no-snapshot", action="store_true",
                   help="run the shoal binary in place instead of a copy taken at start "
                        "(the copy keeps a concurrent cargo build from swapping it mid-run)")
    p.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results",
                   help="where the JSON and logs go (default bench/results)")
    p.add_argument("--show", type=Path, metavar="JSON",
                   help="print the table of an earlier results file and exit (runs nothing)")
    args = p.parse_args(argv)
    if args.show:
        return args

    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.workers < 1:
        p.error("-n must be at least 1")
    if args.synthetic_dir is None and args.synthetic and not args.synthetic_script.is_file():
        p.error(f"synthetic generator not found: {args.synthetic_script}")
    need_real = not args.no_real
    if need_real or args.python is None:
        if args.suites_dir is None:
            p.error("no suites dir: set up the suites with `../shared/suites/setup.sh DIR` "
                    "(from the repo root), then pass --suites-dir DIR or export SHOAL_SUITES=DIR")
        args.suites_dir = Path(args.suites_dir).resolve()
        if not (args.suites_dir / "src").is_dir():
            p.error(f"{args.suites_dir} has no src/: run `../shared/suites/setup.sh {args.suites_dir}` first")
    if args.python is None:
        args.python = args.suites_dir / "venv" / "bin" / "python"
    # Keep the venv path as given (no symlink resolution): venv/bin/python is a
    # symlink and resolving it would step outside the venv.
    args.python = Path(os.path.abspath(args.python))
    if not os.access(args.python, os.X_OK):
        p.error(f"python not found: {args.python}")
    args.shoal = args.shoal.resolve()
    if not os.access(args.shoal, os.X_OK):
        p.error(f"shoal binary not found: {args.shoal} (build it: cargo build --release)")
    args.only = set(filter(None, (args.only or "").split(","))) or None
    args.skip = set(filter(None, (args.skip or "").split(",")))
    args.pytest_args = shlex.split(args.pytest_args)
    # Absolute: the JUnit files and shoal+h's cache_dir are given to runners in other cwds.
    args.results_dir = args.results_dir.resolve()
    return args


def load_real_suites(args):
    """[(name, directory, expected_tests, notes)] from suites.tsv or src/."""
    return [
        (
            row["name"],
            row["dir"],
            int(row["tests_serial"]) if row.get("tests_serial", "").isdigit() else None,
            row.get("notes", ""),
        )
        for row in read_suites(args.suites_dir, args.suites_tsv, SHARED_SUITES)
    ]


def synthetic_suites(args):
    out = args.synthetic_dir
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="shoal-synthetic-"))
    out = out.resolve()
    if not all((out / name).is_dir() for name, _, _ in SYNTHETIC):
        log(f"== generating synthetic suites in {out}")
        subprocess.run([sys.executable, str(args.synthetic_script), str(out)], check=True)
    return [(name, out / name, n, "synthetic: " + note) for name, n, note in SYNTHETIC]


def parse_summary(output):
    """The final pytest summary line and its counts, or (None, None)."""
    for line in reversed(output.splitlines()):
        m = SUMMARY_RE.search(line)
        if m:
            counts = {}
            if m.group(1) != "no tests ran":
                for part in m.group(1).split(", "):
                    num, word = COUNT_RE.fullmatch(part).groups()
                    word = NORMALISE.get(word, word)
                    counts[word] = counts.get(word, 0) + int(num)
            return line.strip().strip("=").strip(), counts
    return None, None


def outcome_key(counts):
    if counts is None:
        return None
    return tuple((k, counts.get(k, 0)) for k in OUTCOMES if counts.get(k, 0))


def fmt_counts(key):
    if key is None:
        return "?"
    return ", ".join(f"{v} {k}" for k, v in key) or "none"


def kill_group(pgid):
    """SIGTERM the process group, then SIGKILL whatever is left after 5 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        for _ in range(50):
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def run_command(cmd, cwd, env, timeout, log_path):
    """Run cmd in its own process group; output to log_path. Returns a result dict.

    The exit is collected with os.wait4 from a thread, which also gives the CPU
    time (user + sys) of the command and of the descendants it waited for.
    """
    load_before = os.getloadavg()[0]
    with open(log_path, "w+b") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        done = {}

        def reap():
            _, status, ru = os.wait4(proc.pid, 0)
            done["end"] = time.perf_counter()
            done["rc"] = os.waitstatus_to_exitcode(status)
            done["cpu"] = ru.ru_utime + ru.ru_stime

        t = threading.Thread(target=reap, daemon=True)
        t.start()
        t.join(timeout)
        timed_out = t.is_alive()
        if timed_out:
            kill_group(proc.pid)
            t.join(10)
        else:
            # Leftover children (workers) of a runner that exited: kill them too.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        proc.returncode = done.get("rc", -9)  # we reaped it; keep Popen from trying
        wall = done.get("end", time.perf_counter()) - start
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    summary, counts = parse_summary(text)
    res = {
        "cmd": cmd,
        "cwd": str(cwd),
        "wall_s": round(wall, 3),
        "cpu_s": round(done["cpu"], 3) if "cpu" in done else None,
        "rc": proc.returncode,
        "timed_out": timed_out,
        "summary": summary,
        "counts": counts,
        "load1_before": round(load_before, 2),
        "log": str(log_path),
    }
    res["tail"] = text.splitlines()[-TAIL_LINES:]
    return res


# The runners a shoal row is measured for, and compared with xdist.
SHOAL_RUNNERS = ("shoal", "shoal+h", "baseline")


def runner_commands(args, extra, name, cache_root):
    """{runner: function(junit_path) -> command} for this suite. Every runner writes a JUnit
    file (the serial run's durations give the bounds). shoal+h keeps pytest's cache, in a
    directory of the suite's own under the results dir, so shoal schedules from the
    durations store its earlier runs wrote; the others run without the cache provider, so
    they start from no history every time."""
    py = str(args.python)
    no_cache = ["-p", "no:cacheprovider"]
    history = ["-o", f"cache_dir={cache_root / name}"]
    common = ["-q"] + extra + args.pytest_args
    shoal = [str(args.shoal), "--python", py, "-n", str(args.workers)]
    cmds = {
        # The bounds need every test's whole duration (setup + call + teardown), whatever
        # the suite's own ini says.
        "serial": [py, "-m", "pytest"] + no_cache + ["-o", "junit_duration_report=total"] + common,
        "xdist": [py, "-m", "pytest", "-n", str(args.workers)] + no_cache + common,
        "shoal": shoal + no_cache + common,
    }
    if not args.no_history:
        cmds["shoal+h"] = shoal + history + common
    if args.baseline:
        cmds["baseline"] = [str(args.baseline), "--python", py, "-n", str(args.workers)] + no_cache + common
    return {rn: (lambda junit, cmd=cmd: cmd + [f"--junitxml={junit}"]) for rn, cmd in cmds.items()}


def collect_command(args, extra):
    return [str(args.python), "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"] \
        + extra + args.pytest_args


def status_of(r):
    """'ok' for a normal pytest run: exit code 0 (all passed) or 1 (some test failed), a
    summary line, and no tests left unrun; for the collect-only run, exit code 0."""
    if r["timed_out"]:
        return "TIMEOUT"
    if r["runner"] == "collect":
        return "ok" if r["rc"] == 0 else f"rc={r['rc']}"
    if r["rc"] not in (0, 1):
        return f"rc={r['rc']}"
    if r["summary"] is None:
        return "no-summary"
    if (r["counts"] or {}).get("not run"):
        return "incomplete"
    return "ok"


def junit_durations(path):
    """(sum, longest) of the <testcase> times in a JUnit file, or None if it cannot be read."""
    try:
        times = [float(tc.get("time") or 0) for tc in ET.parse(path).iter("testcase")]
    except (OSError, ET.ParseError, ValueError):
        return None
    return (round(sum(times), 3), round(max(times, default=0.0), 3))


def timed(entry, runner, i, cmd, cwd, env, timeout, log_path):
    """One timed run of `runner`, recorded in the suite's entry and logged."""
    r = run_command(cmd, cwd, env, timeout, log_path)
    r["runner"] = runner
    r["iteration"] = i
    entry["runs"].append(r)
    cpu = f"{r['cpu_s']:7.2f}" if r["cpu_s"] is not None else "      -"
    log(f"   {runner:8} #{i}: {r['wall_s']:8.2f}s wall {cpu}s cpu  load {r['load1_before']:4.1f}"
        f"  rc={r['rc']}  {status_of(r):10} {r['summary'] or ''}")
    return r


def bench_suite(args, suite, env, logs_dir, cache_root):
    name, cwd, expected, notes = suite
    extras = SUITE_EXTRAS.get(name, {})
    if extras.get("subdir"):
        cwd = cwd / extras["subdir"]
    extra = list(extras.get("args", []))
    timeout = max(args.timeout, extras.get("min_timeout", 0))
    cmds = runner_commands(args, extra, name, cache_root)
    collect = collect_command(args, extra)
    entry = {"suite": name, "cwd": str(cwd), "expected_tests": expected, "notes": notes,
             "timeout_s": timeout, "workers": args.workers,
             "commands": {"collect": collect, **{rn: f(f"{name}-{rn}-I.xml") for rn, f in cmds.items()}},
             "runs": []}
    if not cwd.is_dir():
        log(f"== {name}: missing directory {cwd}, skipped")
        entry["error"] = f"missing directory {cwd}"
        return entry

    log(f"== {name} ({cwd})")
    if not args.no_warmup:
        r = run_command(collect, cwd, env, timeout, logs_dir / f"{name}-warmup.log")
        last = (Path(r["log"]).read_text(errors="replace").strip().splitlines() or [""])[-1]
        entry["warmup"] = {"wall_s": r["wall_s"], "rc": r["rc"], "last_line": last}
        log(f"   warmup (collect-only): {r['wall_s']:.2f}s rc={r['rc']} {last}")
    if "shoal+h" in cmds:
        # The history run's own history: one untimed shoal run fills its durations store.
        r = run_command(cmds["shoal+h"](logs_dir / f"{name}-shoal+h-warmup.xml"), cwd, env, timeout,
                        logs_dir / f"{name}-shoal+h-warmup.log")
        entry["history_warmup"] = {"wall_s": r["wall_s"], "rc": r["rc"]}
        log(f"   warmup (shoal, history): {r['wall_s']:.2f}s rc={r['rc']}")

    for i in range(args.repeat):
        timed(entry, "collect", i, collect, cwd, env, timeout, logs_dir / f"{name}-collect-{i}.log")
        for runner, cmd in cmds.items():
            junit = logs_dir / f"{name}-{runner}-{i}.xml"
            r = timed(entry, runner, i, cmd(junit), cwd, env, timeout, logs_dir / f"{name}-{runner}-{i}.log")
            if runner == "serial":
                r["junit_durations"] = junit_durations(junit)

    summarise(entry, list(cmds))
    return entry


def median_of(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def summarise(entry, runners):
    by = {rn: [r for r in entry["runs"] if r["runner"] == rn] for rn in ["collect"] + runners}
    entry["median_s"] = {}
    entry["median_cpu_s"] = {}
    entry["status"] = {}
    for rn, runs in by.items():
        ok = [r for r in runs if status_of(r) == "ok"]
        entry["median_s"][rn] = median_of([r["wall_s"] for r in ok])
        entry["median_cpu_s"][rn] = median_of([r["cpu_s"] for r in ok])
        bad = sorted({status_of(r) for r in runs} - {"ok"})
        entry["status"][rn] = "ok" if not bad else "/".join(bad)

    # The bounds, from the medians of collect and serial and of the serial runs' durations.
    workers = entry.get("workers", 2)
    collect, serial = entry["median_s"]["collect"], entry["median_s"]["serial"]
    durations = [r.get("junit_durations") for r in by["serial"] if status_of(r) == "ok"]
    durations = [d for d in durations if d]
    bounds = {}
    if collect is not None and durations:
        total = median_of([d[0] for d in durations])
        longest = median_of([d[1] for d in durations])
        bounds = {"sum_durations_s": total, "longest_s": longest,
                  "lb_s": round(collect + max(total / workers, longest), 3)}
        if serial is not None:
            bounds["ideal_s"] = round(collect + max((serial - collect) / workers, longest), 3)
    entry["bounds"] = bounds

    x = entry["median_s"].get("xdist")
    entry["ratios"] = {
        rn: {"xdist": ratio(entry["median_s"][rn], x),
             "serial": ratio(entry["median_s"][rn], serial),
             "lb": ratio(entry["median_s"][rn], bounds.get("lb_s")),
             "ideal": ratio(entry["median_s"][rn], bounds.get("ideal_s")),
             "cpu_xdist": ratio(entry["median_cpu_s"][rn], entry["median_cpu_s"].get("xdist"))}
        for rn in runners if rn in SHOAL_RUNNERS
    }

    xkeys = {outcome_key(r["counts"]) for r in by["xdist"] if status_of(r) == "ok"}
    shoals = [rn for rn in runners if rn in SHOAL_RUNNERS]
    skeys = {outcome_key(r["counts"]) for rn in shoals for r in by[rn] if status_of(r) == "ok"}
    notes = []
    bad_shoal = [f"{rn} {entry['status'][rn]}" for rn in shoals if entry["status"][rn] != "ok"]
    if bad_shoal:
        agree = None
        notes += bad_shoal
    elif not xkeys:
        agree = None
        notes.append(f"xdist {entry['status']['xdist']}")
    else:
        agree = skeys <= xkeys
        if not agree:
            notes.append("counts differ: xdist " + " | ".join(fmt_counts(k) for k in xkeys)
                         + "; shoal " + " | ".join(fmt_counts(k) for k in skeys))
    if len(xkeys) > 1:
        notes.append("xdist counts vary between runs")
    if entry["status"]["xdist"] != "ok" and xkeys:
        notes.append(f"xdist {entry['status']['xdist']}")
    for rn in ("collect", "serial"):
        if entry["status"][rn] != "ok":
            notes.append(f"{rn} {entry['status'][rn]}: no bounds")
    # Non-outcome counts (deselected, warnings): note differences only.
    # xdist's summary never counts deselected tests, so it is left out of that comparison.
    for extra in ("deselected", "warnings"):
        vals = {rn: sorted({(r["counts"] or {}).get(extra, 0) for r in runs if r["counts"] is not None})
                for rn, runs in by.items()
                if rn != "collect" and not (extra == "deselected" and rn == "xdist")}
        if len({tuple(v) for v in vals.values() if v}) > 1:
            notes.append(f"{extra} differ: " + ", ".join(f"{rn} {'/'.join(map(str, v))}"
                                                         for rn, v in vals.items() if v))
    entry["counts_agree"] = agree
    good_x = [r for r in by["xdist"] if status_of(r) == "ok"]
    entry["outcomes"] = fmt_counts(outcome_key(good_x[-1]["counts"])) if good_x else "?"
    entry["flagged"] = agree is False or bool(bad_shoal)
    entry["table_notes"] = notes


def fmt_ratio(v, agree):
    """A ratio; in parentheses where the runs did different work (counts differ)."""
    if not v:
        return "-"
    return f"{v:.2f}" if agree is not False else f"({v:.2f})"


def fmt_s(v):
    return f"{v:.2f}" if v is not None else "-"


def is_failure(entry, r):
    """A run worth showing the output of: it did not end normally, or it is a shoal run
    whose counts match no xdist run."""
    if status_of(r) != "ok":
        return True
    if r["runner"] not in SHOAL_RUNNERS or entry.get("counts_agree") is not False:
        return False
    xkeys = {outcome_key(x["counts"]) for x in entry["runs"] if x["runner"] == "xdist" and status_of(x) == "ok"}
    return outcome_key(r["counts"]) not in xkeys


def geomean(values):
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def print_table(entries, runners):
    """One row per suite: median seconds per runner, the bounds, and per shoal runner its
    ratios to xdist, LB and ideal; then the geometric means of shoal/xdist."""
    shoals = [rn for rn in runners if rn in SHOAL_RUNNERS]
    times = ["collect"] + list(runners)
    head = (["", "suite"] + [f"{rn} s" for rn in times] + ["LB s", "ideal s"]
            + [f"{rn}/{b}" for rn in shoals for b in ("x", "LB", "ideal")]
            + ["counts", "outcomes (xdist)"])
    numeric = len(times) + 2 + 3 * len(shoals)
    right = set(range(2, 2 + numeric))
    rows = []
    for e in entries:
        if "median_s" not in e:
            rows.append(["!!", e["suite"]] + ["-"] * numeric + ["-", e.get("error", "")])
            continue
        cells = []
        for rn in times:
            v = e["median_s"].get(rn)
            cells.append(fmt_s(v) if v is not None else e["status"].get(rn, "-"))
        b = e["bounds"]
        cells += [fmt_s(b.get("lb_s")), fmt_s(b.get("ideal_s"))]
        for rn in shoals:
            rr = e["ratios"][rn]
            cells += [fmt_ratio(rr["xdist"], e["counts_agree"]), fmt_ratio(rr["lb"], True),
                      fmt_ratio(rr["ideal"], True)]
        agree = {True: "agree", False: "DIFFER", None: "n/a"}[e["counts_agree"]]
        rows.append(["!!" if e["flagged"] else "", e["suite"]] + cells + [agree, e["outcomes"]])
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]

    def fmt(r):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    print(fmt(head))
    print("-" * len(fmt(head)))
    for r in rows:
        print(fmt(r))
    print()
    for rn in shoals:
        agreed = [e for e in entries if e.get("counts_agree")]
        g = geomean([e["ratios"][rn]["xdist"] for e in agreed])
        if g:
            print(f"geometric mean {rn}/xdist over {len(agreed)} suites: {g:.3f}")
    notes = [(e["suite"], n) for e in entries for n in e.get("table_notes", [])]
    if notes:
        print()
        for suite, n in notes:
            print(f"  {suite}: {n}")
    failures = [(e["suite"], r) for e in entries for r in e.get("runs", []) if is_failure(e, r)]
    for suite, r in failures:
        print()
        print(f"-- {suite}: {r['runner']} #{r['iteration']} {status_of(r)} after {r['wall_s']:.1f}s")
        print(f"   cwd: {r['cwd']}")
        print(f"   cmd: {shlex.join(r['cmd'])}")
        print(f"   log: {r['log']}")
        for ln in r["tail"][-15:]:
            print("   | " + ln)


def git_info():
    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=REPO_ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except Exception:
            return None
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", "crates"))}


def show(path):
    """Re-print the table of a results file (summaries re-parsed from the stored tails)."""
    data = json.loads(path.read_text())
    runners = [rn for rn in data["suites"][0]["commands"] if rn != "collect"] if data["suites"] else []
    for e in data["suites"]:
        if "runs" in e and e["runs"]:
            for r in e["runs"]:
                if r.get("tail"):
                    r["summary"], r["counts"] = parse_summary("\n".join(r["tail"]))
            summarise(e, runners)
    m = data["meta"]
    print(f"{path.name}: shoal sha256 {m.get('shoal_sha256', '?')[:12]}, -n {m['workers']}, "
          f"median of {m['repeat']}, {m['cpus']} cpus")
    print()
    print_table(data["suites"], runners)
    return 1 if any(e.get("flagged") or "error" in e for e in data["suites"]) else 0


def main(argv=None):
    args = parse_args(argv)
    if args.show:
        return show(args.show)
    suites = []
    if not args.no_real:
        suites += load_real_suites(args)
    if args.synthetic or args.synthetic_dir is not None:
        suites += synthetic_suites(args)
    known = {s[0] for s in suites}
    if args.only:
        unknown = args.only - known
        if unknown:
            print(f"run.py: unknown suite(s) in --only: {', '.join(sorted(unknown))} "
                  f"(known: {', '.join(sorted(known))}; synthetic ones need --synthetic)", file=sys.stderr)
            return 2
        suites = [s for s in suites if s[0] in args.only]
    suites = [s for s in suites if s[0] not in args.skip]
    if not suites:
        print("run.py: no suites selected", file=sys.stderr)
        return 2

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    logs_dir = args.results_dir / stamp / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    json_path = args.results_dir / f"{stamp}.json"

    # Snapshot the binary: others may rebuild target/release/shoal mid-run.
    if not args.no_snapshot:
        snap = args.results_dir / stamp / "shoal"
        shutil.copy2(args.shoal, snap)
        shoal_orig, args.shoal = args.shoal, snap
        if args.baseline:
            shutil.copy2(args.baseline, args.results_dir / stamp / "baseline")
            args.baseline = args.results_dir / stamp / "baseline"
    else:
        shoal_orig = args.shoal
    shoal_sha = hashlib.sha256(args.shoal.read_bytes()).hexdigest()

    env = dict(os.environ)
    env["PATH"] = str(args.python.parent) + os.pathsep + env.get("PATH", "")
    env.pop("PYTEST_XDIST_AUTO_NUM_WORKERS", None)
    # The warm-up writes the bytecode and assertion-rewrite caches only where Python may.
    env.pop("PYTHONDONTWRITEBYTECODE", None)

    pyver = subprocess.run([str(args.python), "-c",
                            "import sys, pytest, xdist; print(sys.version.split()[0], pytest.__version__, xdist.__version__)"],
                           capture_output=True, text=True).stdout.split()
    meta = {
        "timestamp": stamp,
        "argv": sys.argv,
        "host": platform.node(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": str(args.python),
        "versions": dict(zip(("python", "pytest", "xdist"), pyver)),
        "shoal": str(shoal_orig),
        "shoal_snapshot": str(args.shoal) if not args.no_snapshot else None,
        "shoal_sha256": shoal_sha,
        "shoal_git": git_info(),
        "baseline": str(args.baseline) if args.baseline else None,
        "workers": args.workers,
        "repeat": args.repeat,
        "warmup": not args.no_warmup,
        "pytest_args": args.pytest_args,
        "pytest_addopts_env": os.environ.get("PYTEST_ADDOPTS"),
    }
    log(f"shoal {shoal_orig} (sha256 {shoal_sha[:12]}, {meta['shoal_git']['commit']}{' dirty' if meta['shoal_git']['dirty'] else ''}), "
        f"python {args.python} {meta['versions']}, -n {args.workers}, repeat {args.repeat}, {os.cpu_count()} cpus")
    cache_root = args.results_dir / stamp / "cache"
    runners = list(runner_commands(args, [], "", cache_root))

    entries = []

    def save():
        json_path.write_text(json.dumps({"meta": meta, "suites": entries}, indent=2) + "\n")

    try:
        for suite in suites:
            entries.append(bench_suite(args, suite, env, logs_dir, cache_root))
            save()
    except KeyboardInterrupt:
        log("interrupted: partial results below")
    save()
    print()
    loads = [r["load1_before"] for e in entries for r in e.get("runs", [])]
    print(f"shoal vs serial pytest, pytest-xdist and the lower bound, -n {args.workers}, median of "
          f"{args.repeat}, wall seconds ({os.cpu_count()} cpus; shoal/x below 1 means shoal is faster)")
    if loads:
        print(f"1-min load average before runs: mean {statistics.mean(loads):.1f}, max {max(loads):.1f} "
              f"(well above 0 means other work shared the machine: timings are noisy)")
    print()
    print_table(entries, runners)
    print()
    print(f"results: {json_path}")
    print(f"logs:    {logs_dir}")
    return 1 if any(e.get("flagged") or "error" in e for e in entries) else 0


if __name__ == "__main__":
    sys.exit(main())
