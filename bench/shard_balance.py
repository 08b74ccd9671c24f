#!/usr/bin/env python3
"""How evenly ``--shard`` splits the shared suites, against pytest-split and a split by files.

For each suite this records a history (one ``shoal -n N`` run, whose durations store gives
every test's setup-to-teardown time), then splits the collection into 2, 4 and 8 shards four
ways, all on the same durations:

- shoal: the partition ``--shard`` computes (its own code, through
  ``cargo run --example shard_plan``);
- pytest-split's ``least_duration``: tests longest first, each to the least loaded group;
- pytest-split's ``duration_based_chunks``: collection order, a new group when the running
  total passes the next multiple of total / N;
- files: the files in collection order, in N runs of equal file counts.

and prints each split's balance: the longest shard / (total / N) (1.00 is perfect), with the
best any split can do: max(1, longest unit / (total / N)), where a unit is what the mode keeps
together (a test under load). pytest-split's two algorithms are written here from their
documented behaviour, to compare with; shoal does not use pytest-split.

usage: python3 bench/shard_balance.py --suites-dir .suites [--dist load] [--only a,b]
       [--history-dir bench/results/histories]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
SHARED_SUITES = REPO_ROOT.parent / "shared" / "suites"
sys.path.insert(0, str(BENCH_DIR))
from suites import read_suites  # noqa: E402

SHARDS = (2, 4, 8)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suites-dir", type=Path, required=True, help="where ../shared/suites/setup.sh put the suites")
    p.add_argument("--shoal", type=Path, default=REPO_ROOT / "target" / "release" / "shoal")
    p.add_argument("--dist", default="load", help="the --dist mode whose units the shards keep (default load)")
    p.add_argument("-n", dest="workers", type=int, default=2, help="workers for the history run (default 2)")
    p.add_argument("--only", default=None, help="comma-separated suite names")
    p.add_argument("--skip", default=None, help="comma-separated suite names to leave out")
    p.add_argument("--history-dir", type=Path, default=None,
                   help="keep each suite's recorded history here and reuse it on the next run")
    return p.parse_args(argv)


def collect(suite_dir: Path, python: Path) -> list[str]:
    out = subprocess.run(
        [str(python), "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=suite_dir, capture_output=True, text=True,
    )
    ids = []
    for line in out.stdout.splitlines():
        if not line.strip():
            break
        ids.append(line.strip())
    return ids


def history(suite_dir: Path, args, python: Path) -> dict[str, float]:
    """Every test's seconds, setup to teardown, from one shoal run's durations store."""
    with tempfile.TemporaryDirectory() as cache:
        subprocess.run(
            [str(args.shoal), "--python", str(python), "-n", str(args.workers), "-q",
             "-o", f"cache_dir={cache}"],
            cwd=suite_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1800,
        )
        store = Path(cache) / "shoal" / "durations.json"
        tests = json.loads(store.read_text())["tests"] if store.exists() else {}
    return {nodeid: t["average"] for nodeid, t in tests.items()}


def item(nodeid: str) -> dict:
    parts = nodeid.split("::")
    path = parts[0]
    scope = "::".join(parts[:2]) if len(parts) > 2 else path
    return {"nodeid": nodeid, "file": path, "scope": scope, "group": None}


def shoal_plans(items, durations, dist) -> dict:
    request = json.dumps({"dist": dist, "shards": list(SHARDS), "items": items, "durations": durations})
    out = subprocess.run(
        ["cargo", "run", "--quiet", "--release", "-p", "shoal-runner", "--example", "shard_plan"],
        cwd=REPO_ROOT, input=request, capture_output=True, text=True, check=True,
    )
    return {int(n): parts for n, parts in json.loads(out.stdout).items()}


def least_duration(costs, n):
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    loads = [0.0] * n
    groups = [[] for _ in range(n)]
    for i in order:
        g = min(range(n), key=lambda k: (loads[k], k))
        loads[g] += costs[i]
        groups[g].append(i)
    return groups


def duration_based_chunks(costs, n):
    share = sum(costs) / n
    groups = [[] for _ in range(n)]
    acc, g = 0.0, 0
    for i, c in enumerate(costs):
        if acc + c > share * (g + 1) and g < n - 1 and groups[g]:
            g += 1
        groups[g].append(i)
        acc += c
    return groups


def by_files(items, n):
    files = list(dict.fromkeys(it["file"] for it in items))
    per = -(-len(files) // n)
    index = {f: k // per for k, f in enumerate(files)}
    groups = [[] for _ in range(n)]
    for i, it in enumerate(items):
        groups[index[it["file"]]].append(i)
    return groups


def balance(groups, costs, n):
    share = sum(costs) / n
    return max(sum(costs[i] for i in g) for g in groups) / share if share else 1.0


def unit_bound(items, costs, n, dist):
    key = {"loadscope": "scope", "loadfile": "file"}.get(dist)
    units = {}
    for i, it in enumerate(items):
        units.setdefault(it[key] if key else i, 0.0)
        units[it[key] if key else i] += costs[i]
    share = sum(costs) / n
    return max(1.0, max(units.values()) / share) if share else 1.0


def main(argv):
    args = parse_args(argv)
    args.suites_dir = args.suites_dir.resolve()  # the suites run in their own directories
    python = args.suites_dir / "venv" / "bin" / "python"
    suites = read_suites(args.suites_dir, None, SHARED_SUITES)
    only = set(args.only.split(",")) if args.only else None
    skip = set(args.skip.split(",")) if args.skip else set()
    rows = []
    for suite in suites:
        name = suite["name"]
        if (only and name not in only) or name in skip:
            continue
        print(f"== {name}: collecting and recording a history", file=sys.stderr, flush=True)
        ids = collect(suite["dir"], python)
        saved = args.history_dir / f"{name}.json" if args.history_dir else None
        if saved and saved.exists():
            durations = json.loads(saved.read_text())
        else:
            durations = history(suite["dir"], args, python)
            if saved:
                saved.parent.mkdir(parents=True, exist_ok=True)
                saved.write_text(json.dumps(durations))
        if not ids or not durations:
            print(f"   {name}: no collection or no history; skipped", file=sys.stderr)
            continue
        items = [item(i) for i in ids]
        known = [durations[i] for i in ids if i in durations]
        mean = sum(known) / len(known)
        costs = [durations.get(i, mean) for i in ids]
        plans = shoal_plans(items, durations, args.dist)
        for n in SHARDS:
            rows.append((
                name, n,
                balance(plans[n], costs, n),
                balance(least_duration(costs, n), costs, n),
                balance(duration_based_chunks(costs, n), costs, n),
                balance(by_files(items, n), costs, n),
                unit_bound(items, costs, n, args.dist),
            ))
    print(f"\nbalance: longest shard / (total / N), --dist {args.dist}; 1.00 is perfect\n")
    print("| suite | N | shoal | pytest-split least_duration | pytest-split duration_based_chunks | files | best possible |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, n, *values in rows:
        print(f"| {name} | {n} | " + " | ".join(f"{v:.3f}" for v in values) + " |")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
