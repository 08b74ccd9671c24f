#!/usr/bin/env python3
"""Check that shoal gives every test the outcome serial pytest gives it, on real suites.

For every suite prepared by ../shared/suites/setup.sh DIR this runs, from the suite's own
directory and with the suite venv's bin/ first on PATH,

    VENV/bin/python -m pytest -p no:cacheprovider -q --junitxml=X          (serial)
    SHOAL --python VENV/bin/python -n 2 -p no:cacheprovider -q --junitxml=X     (mode n2)
    SHOAL --python VENV/bin/python -n 0 -p no:cacheprovider -q --junitxml=X     (mode n0)
    SHOAL --python VENV/bin/python -n 2 --start spawn ... --junitxml=X          (mode spawn)

reads each JUnit XML file into node id -> outcome, and prints, per suite and mode, whether
the per-test outcomes are identical to serial pytest's, listing the node ids that differ.

Outcomes are what JUnit can tell: passed (an xpass that is not strict is a pass there too),
failed (a strict xpass too), error, skipped, xfail. A test with two <testcase> elements (a
failure and then an error in teardown) gets both, joined by "+". Node ids are rebuilt from
each <testcase>'s classname and name the same way for both sides: pytest writes the node id
"tests/a/test_b.py::TestC::test_d[x.y]" as classname "tests.a.test_b.TestC" and name
"test_d[x.y]"; the longest dotted prefix of the classname that names a .py file under the
suite directory is the file, the rest the classes. An exit code that differs from serial
pytest's counts as a difference as well.

With --check-xdist, a suite where some shoal mode differs is also run under pytest-xdist
(VENV/bin/python -m pytest -n 2 ...), and each differing node id is marked with whether it
differs from serial there too ("also under xdist") or not ("shoal only").

Every command's output and XML go to bench/results/compat-<timestamp>/ (--results-dir), with
the copy of the shoal binary that ran (a concurrent cargo build cannot swap it mid-run).

With --xdist-acceptance, instead: pytest-xdist 3.8's own acceptance tests
(SUITES_DIR/src/pytest_xdist-3.8.0/testing/acceptance_test.py), every distributed pytester run
routed through shoal by ../shared/suites/xdist_acceptance.py, with --junitxml; each test's
outcome is compared with bench/xdist_acceptance_expected.txt, the tests expected to fail and
why. A test that fails but is not listed, or is listed but is missing, is a difference; a
listed test that passes is reported as fixed (a difference too with --strict, so the list stays
honest). --acceptance-k EXPR runs the subset pytest's -k selects; --ci-subset the subset
scripts/test runs (ACCEPTANCE_CI_SUBSET).

Exit status: 0 if every mode of every suite matched serial pytest, 1 if something differed
(or a run timed out or wrote no XML), 2 on usage errors.
"""

import argparse
import datetime
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from suites import read_suites

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
# ../shared/suites next to the checkout; $SHOAL_SHARED_SUITES where the checkout is elsewhere
# (a git worktree).
SHARED_SUITES = Path(os.environ.get("SHOAL_SHARED_SUITES", REPO_ROOT.parent / "shared" / "suites"))

# mode name -> shoal arguments (before the common pytest arguments).
SHOAL_MODES = {
    "n2": ["-n", "2"],
    "n0": ["-n", "0"],
    "spawn": ["-n", "2", "--start", "spawn"],
}
DEFAULT_MODES = ["n2", "n0", "spawn"]
COMMON_ARGS = ["-p", "no:cacheprovider", "-q"]

# Variables that would change what pytest does or where a worker thinks it is.
CLEAN_ENV = [
    "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT",
    "PYTEST_XDIST_TESTRUNUID", "PYTEST_XDIST_AUTO_NUM_WORKERS", "PYTEST_CURRENT_TEST",
    "SHOAL_START", "PY_COLORS", "FORCE_COLOR",
]

MAX_LISTED = 50  # differing node ids listed per suite and mode

# "2 failed, 43 passed in 3.66s", "no tests ran in 0.01s", "... in 69.08s (0:01:09)"
SUMMARY_RE = re.compile(r"^=* ?(\d+ [a-z]|no tests ran).* in \d+(\.\d+)?s\b")


def log(msg=""):
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: bench/compat.py --suites-dir /work/suites --only markupsafe,pluggy "
               "--modes n2,spawn",
    )
    p.add_argument("--suites-dir", type=Path, default=os.environ.get("SHOAL_SUITES"),
                   help="output dir of ../shared/suites/setup.sh (holds venv/ and src/); "
                        "default $SHOAL_SUITES")
    p.add_argument("--suites-tsv", type=Path, default=None,
                   help="suite list (default: ../shared/suites/suites.tsv, else "
                        "SUITES_DIR/suites.tsv, else every directory in SUITES_DIR/src)")
    p.add_argument("--shoal", type=Path, default=REPO_ROOT / "target" / "release" / "shoal",
                   help="shoal binary (default: target/release/shoal in the repo)")
    p.add_argument("--only", default=None, help="comma-separated suite names to check")
    p.add_argument("--skip", default=None, help="comma-separated suite names to leave out")
    p.add_argument("--modes", default=",".join(DEFAULT_MODES),
                   help=f"comma-separated shoal modes to compare with serial pytest: "
                        f"{', '.join(SHOAL_MODES)} (default: all)")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="per-command timeout in seconds (default 1800)")
    p.add_argument("--check-xdist", action="store_true",
                   help="where a shoal mode differs, also run pytest -n 2 (pytest-xdist) and "
                        "say which differing node ids differ there too")
    p.add_argument("--xdist-acceptance", action="store_true",
                   help="run pytest-xdist's acceptance tests through shoal and compare them "
                        "with bench/xdist_acceptance_expected.txt (see above)")
    p.add_argument("--acceptance-k", default=None, metavar="EXPR",
                   help="with --xdist-acceptance: only the tests pytest's -k EXPR selects")
    p.add_argument("--ci-subset", action="store_true",
                   help="with --xdist-acceptance: only the tests scripts/test runs "
                        "(ACCEPTANCE_CI_SUBSET)")
    p.add_argument("--strict", action="store_true",
                   help="with --xdist-acceptance: an expected failure that passes is a "
                        "difference too")
    p.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results",
                   help="logs and XML go to RESULTS_DIR/compat-<timestamp>/ (default "
                        "bench/results)")
    args = p.parse_args(argv)
    if args.suites_dir is None:
        p.error("no suites dir: set up the suites with `../shared/suites/setup.sh DIR` "
                "(from the repo root), then pass --suites-dir DIR or export SHOAL_SUITES=DIR")
    args.suites_dir = Path(args.suites_dir).resolve()
    if not (args.suites_dir / "src").is_dir():
        p.error(f"{args.suites_dir} has no src/: run `../shared/suites/setup.sh "
                f"{args.suites_dir}` first")
    # Keep the venv path as given: venv/bin/python is a symlink that leads out of the venv.
    args.python = Path(os.path.abspath(args.suites_dir / "venv" / "bin" / "python"))
    if not os.access(args.python, os.X_OK):
        p.error(f"python not found: {args.python}")
    args.shoal = args.shoal.resolve()
    if not os.access(args.shoal, os.X_OK):
        p.error(f"shoal binary not found: {args.shoal} (build it: cargo build --release)")
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in args.modes if m not in SHOAL_MODES]
    if unknown or not args.modes:
        p.error(f"unknown mode(s) {unknown}: choose from {', '.join(SHOAL_MODES)}")
    args.only = set(filter(None, (args.only or "").split(","))) or None
    args.skip = set(filter(None, (args.skip or "").split(",")))
    return args


def load_suites(args):
    """[(name, directory)] of the suites to check, as --only and --skip choose."""
    suites = [(row["name"], row["dir"]) for row in read_suites(args.suites_dir, args.suites_tsv, SHARED_SUITES)]
    known = {name for name, _ in suites}
    for name in sorted((args.only or set()) - known):
        log(f"warning: no suite named {name!r} (known: {', '.join(sorted(known))})")
    return [(n, d) for n, d in suites
            if (args.only is None or n in args.only) and n not in args.skip]


def environment(args):
    env = dict(os.environ)
    for name in CLEAN_ENV:
        env.pop(name, None)
    venv_bin = str(args.python.parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = str(args.python.parent.parent)
    return env


def run(cmd, cwd, env, timeout, log_path):
    """Runs cmd in its own process group, output to log_path: (exit code or None on a
    timeout, wall seconds)."""
    start = time.monotonic()
    with open(log_path, "wb") as out:
        out.write(("$ cd " + str(cwd) + "\n$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        # Whatever the runner left behind (or everything, on a timeout) goes too.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.5)
        if code is None:
            proc.wait()
    return code, time.monotonic() - start


def nodeid_of(classname, name, root, cache):
    """The node id pytest's junitxml turned into (classname, name); see the module doc."""
    key = classname
    if key not in cache:
        parts = classname.split(".") if classname else []
        found = None
        for k in range(len(parts), 0, -1):
            path = "/".join(parts[:k]) + ".py"
            if (root / path).is_file():
                found = (path, parts[k:])
                break
        cache[key] = found
    found = cache[key]
    if found is None:  # no such file (a doctest in a text file, a custom item): keep it dotted
        return f"{classname}::{name}" if classname else name
    path, classes = found
    return "::".join([path, *classes, name])


def outcome_of(case):
    for child in case:
        if child.tag == "failure":
            return "failed"
        if child.tag == "error":
            return "error"
        if child.tag == "skipped":
            return "xfail" if child.get("type") == "pytest.xfail" else "skipped"
    return "passed"


def read_junit(path, root):
    """node id -> outcome ("failed+error" for a test with two <testcase> elements)."""
    tree = ET.parse(path)
    cache = {}
    outcomes = {}
    for case in tree.iter("testcase"):
        nodeid = nodeid_of(case.get("classname", ""), case.get("name", ""), root, cache)
        outcome = outcome_of(case)
        outcomes[nodeid] = outcomes[nodeid] + "+" + outcome if nodeid in outcomes else outcome
    return outcomes


def counts(outcomes):
    tally = {}
    for outcome in outcomes.values():
        tally[outcome] = tally.get(outcome, 0) + 1
    return ", ".join(f"{n} {o}" for o, n in sorted(tally.items())) or "none"


def final_line(log_path):
    """The runner's final line ("192 passed, 1 skipped in 3.10s"), for context."""
    lines = log_path.read_text(errors="replace").splitlines()
    for line in reversed(lines):
        if SUMMARY_RE.search(line):
            return line.strip().strip("=").strip()
    return None


def differences(expected, actual):
    """[(nodeid, expected outcome or None, actual outcome or None)] where they differ."""
    return [
        (nodeid, expected.get(nodeid), actual.get(nodeid))
        for nodeid in sorted(set(expected) | set(actual))
        if expected.get(nodeid) != actual.get(nodeid)
    ]


def run_mode(args, env, out_dir, suite, cwd, mode):
    """Runs serial pytest, a shoal mode or xdist; returns a result dict."""
    xml = out_dir / f"{suite}.{mode}.xml"
    if mode == "serial":
        cmd = [str(args.python), "-m", "pytest"]
    elif mode == "xdist":
        cmd = [str(args.python), "-m", "pytest", "-n", "2"]
    else:
        cmd = [str(args.shoal), "--python", str(args.python), *SHOAL_MODES[mode]]
    cmd += [*COMMON_ARGS, f"--junitxml={xml}"]
    log_path = out_dir / f"{suite}.{mode}.log"
    if xml.exists():
        xml.unlink()
    log(f"== {suite}: {mode}: {' '.join(cmd)}")
    code, wall = run(cmd, cwd, env, args.timeout, log_path)
    result = {"mode": mode, "code": code, "wall": wall, "log": log_path, "outcomes": None,
              "summary": final_line(log_path)}
    if code is None:
        result["problem"] = f"timed out after {args.timeout:.0f}s"
    elif not xml.is_file():
        result["problem"] = f"exit code {code}, no JUnit XML written"
    else:
        try:
            result["outcomes"] = read_junit(xml, cwd)
        except ET.ParseError as e:
            result["problem"] = f"unreadable JUnit XML: {e}"
    log(f"   exit {code}, {wall:.1f}s"
        + (f", {counts(result['outcomes'])}" if result["outcomes"] is not None else "")
        + (f"  [{result['problem']}]" if "problem" in result else ""))
    return result


def check_suite(args, env, out_dir, suite, cwd):
    """Returns [(mode, verdict, detail lines)] and whether anything differed."""
    serial = run_mode(args, env, out_dir, suite, cwd, "serial")
    rows = []
    bad = False
    if serial["outcomes"] is None:
        return [("serial", f"ERROR: {serial['problem']} (see {serial['log']})", [])], True
    diffs_by_mode = {}
    for mode in args.modes:
        result = run_mode(args, env, out_dir, suite, cwd, mode)
        if result["outcomes"] is None:
            rows.append((mode, f"ERROR: {result['problem']} (see {result['log']})", []))
            bad = True
            continue
        diffs = differences(serial["outcomes"], result["outcomes"])
        diffs_by_mode[mode] = diffs
        notes = []
        if result["code"] != serial["code"]:
            notes.append(f"exit code {result['code']}, serial pytest {serial['code']}")
        n = len(result["outcomes"])
        if not diffs and not notes:
            rows.append((mode, f"identical ({n} tests: {counts(result['outcomes'])})", []))
            continue
        bad = True
        notes.append(f"its terminal said: {result['summary'] or '?'}")
        rows.append((mode, f"DIFFER: {len(diffs)} of {len(serial['outcomes'])} tests"
                     + f"; {'; '.join(notes)}", diffs))
    xdist = None
    if args.check_xdist and any(diffs_by_mode.values()):
        result = run_mode(args, env, out_dir, suite, cwd, "xdist")
        if result["outcomes"] is not None:
            xdist = result["outcomes"]
        else:
            rows.append(("xdist", f"ERROR: {result['problem']} (see {result['log']})", []))
    # Render the differing node ids.
    rendered = []
    for mode, verdict, diffs in rows:
        lines = []
        for nodeid, want, got in diffs[:MAX_LISTED]:
            line = f"{nodeid}: serial {want or 'absent'}, shoal {got or 'absent'}"
            if xdist is not None:
                there = xdist.get(nodeid)
                same = there == want
                line += (f" (xdist {there or 'absent'}: "
                         + ("shoal only" if same else "also under xdist") + ")")
            lines.append(line)
        if len(diffs) > MAX_LISTED:
            lines.append(f"... and {len(diffs) - MAX_LISTED} more")
        rendered.append((mode, verdict, lines))
    rendered.insert(0, ("serial", f"exit {serial['code']}, {len(serial['outcomes'])} tests: "
                        f"{counts(serial['outcomes'])}", []))
    return rendered, bad


XDIST_SDIST = "pytest_xdist-3.8.0"
ACCEPTANCE_FILE = "testing/acceptance_test.py"
ACCEPTANCE_EXPECTED = BENCH_DIR / "xdist_acceptance_expected.txt"
# The acceptance tests scripts/test runs (about a minute on two cores): startup and crash
# lines, -x, failures, the schedulers, and the known differences around them.
ACCEPTANCE_CI_SUBSET = (
    "test_n1_pass or test_n1_fail or test_n1_skip or test_exitfirst_waits_for_workers_to_finish"
    " or test_dist_tests_with_crash or test_output_verbosity or test_fail_platinfo"
    " or test_crashing_item or test_max_worker_restart_die or test_disable_restart"
    " or test_keyboardinterrupt_hooks_issue79 or test_dist_with_collectonly"
    " or test_worker_id_fixture or test_maxfail_causes_early_termination"
    " or TestLoadScope and test_by_class or TestFileScope and test_by_module"
    " or test_workqueue_ordered_by_size or TestLocking and test_multi_file and worksteal"
)


def read_expected(path):
    """node id -> why it is expected to fail, from lines `NODEID  # reason` (blank lines and
    lines starting with # are comments)."""
    expected = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        nodeid, sep, reason = line.partition(" # ")
        if not sep or not reason.strip():
            raise SystemExit(f"{path}:{number}: expected `NODEID  # reason`, got {line!r}")
        expected[nodeid.strip()] = reason.strip()
    return expected


def run_acceptance(args, out_dir):
    """Runs xdist's acceptance tests through shoal; returns the exit status of main()."""
    cwd = args.suites_dir / "src" / XDIST_SDIST
    plugin = SHARED_SUITES / "xdist_acceptance.py"
    if not (cwd / ACCEPTANCE_FILE).is_file() or not plugin.is_file():
        log(f"ERROR: need {cwd / ACCEPTANCE_FILE} and {plugin}: run ../shared/suites/setup.sh")
        return 2
    expected = read_expected(ACCEPTANCE_EXPECTED)
    env = environment(args)
    env["SHOAL_BIN"] = str(args.shoal)
    env["PYTHONPATH"] = str(SHARED_SUITES)
    xml = out_dir / "xdist_acceptance.xml"
    # A private basetemp: pytester's default under /tmp/pytest-of-USER is pruned by any other
    # pytester run on the machine, which then fails these tests at random.
    cmd = [str(args.python), "-m", "pytest", ACCEPTANCE_FILE, "-p", "xdist_acceptance",
           "--runpytest=subprocess", "-p", "no:randomly", "-p", "no:cacheprovider", "-q",
           f"--basetemp={out_dir / 'basetemp'}", f"--junitxml={xml}"]
    if args.ci_subset:
        args.acceptance_k = ACCEPTANCE_CI_SUBSET
    if args.acceptance_k:
        cmd += ["-k", args.acceptance_k]
    log_path = out_dir / "xdist_acceptance.log"
    log(f"== xdist acceptance: {' '.join(cmd)}")
    code, wall = run(cmd, cwd, env, args.timeout, log_path)
    log(f"   exit {code}, {wall:.1f}s")
    if code is None or not xml.is_file():
        log(f"ERROR: {'timed out' if code is None else 'no JUnit XML'} (see {log_path})")
        return 1
    outcomes = read_junit(xml, cwd)
    failing = {n for n, o in outcomes.items() if "failed" in o or "error" in o}
    selected = set(outcomes)
    unexpected = sorted(failing - set(expected))
    fixed = sorted(n for n in set(expected) & selected if n not in failing)
    missing = sorted(set(expected) - selected) if not args.acceptance_k else []
    print()
    print(f"xdist acceptance through shoal: {counts(outcomes)} ({len(outcomes)} tests, "
          f"{wall:.0f}s); {len(failing & set(expected))} expected failures")
    for nodeid in unexpected:
        print(f"  UNEXPECTED {outcomes[nodeid]}: {nodeid}")
    for nodeid in fixed:
        print(f"  FIXED (remove it from {ACCEPTANCE_EXPECTED.name}): {nodeid}")
    for nodeid in missing:
        print(f"  MISSING (listed but not run): {nodeid}")
    bad = unexpected or missing or (args.strict and fixed)
    print("as expected" if not bad else f"DIFFERENCES FOUND (see {log_path})")
    return 1 if bad else 0


def main(argv):
    args = parse_args(argv)
    if args.xdist_acceptance:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out_dir = (args.results_dir / f"acceptance-{stamp}").resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        snapshot = out_dir / "shoal"
        shutil.copy2(args.shoal, snapshot)
        args.shoal = snapshot
        return run_acceptance(args, out_dir)
    suites = load_suites(args)
    if not suites:
        log("no suites selected")
        return 2
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = (args.results_dir / f"compat-{stamp}").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    env = environment(args)
    # Run a copy, so that a concurrent cargo build cannot swap the binary mid-run.
    snapshot = out_dir / "shoal"
    shutil.copy2(args.shoal, snapshot)
    log(f"shoal {args.shoal} (copied to {snapshot})")
    args.shoal = snapshot
    log(f"python {args.python}, modes {', '.join(args.modes)}; "
        f"logs and XML in {out_dir}")
    report = []
    any_bad = False
    for suite, cwd in suites:
        if not cwd.is_dir():
            report.append((suite, [("-", f"ERROR: missing directory {cwd}", [])]))
            any_bad = True
            continue
        rows, bad = check_suite(args, env, out_dir, suite, cwd)
        any_bad |= bad
        report.append((suite, rows))
    width = max(len(s) for s, _ in report)
    print()
    print(f"{'suite':<{width}}  {'mode':<6}  result")
    print("-" * (width + 60))
    for suite, rows in report:
        for mode, verdict, lines in rows:
            flag = "!!" if verdict.startswith(("DIFFER", "ERROR")) else ""
            print(f"{suite:<{width}}  {mode:<6}  {verdict} {flag}".rstrip())
            for line in lines:
                print(f"{'':<{width}}          {line}")
    print()
    print("all identical" if not any_bad else "DIFFERENCES FOUND")
    return 1 if any_bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
