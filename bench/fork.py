#!/usr/bin/env python3
"""Fork cost: forking W workers from a large collector, and the copy-on-write faults as they run.

usage: bench/fork.py [--suite DIR | --tests N] [--imports a,b] [-n W] [--repeat R] [--python PY]

Runs `shoal -n W -p fork_probe` (bench/probe/fork_probe.py) --repeat times in each of two modes,
alternating: `default` (the collector as shoal leaves it) and `freeze` (gc.freeze() after
collection, what the safe variant would have to match). Prints, from the medians:

    collector      its resident memory once collection is done (Rss, MiB)
    fork ms        one fork() of that process (the page-table copy every worker pays)
    faults/test    minor page faults of a worker from its fork to its session's end, per test
    private MiB    what a worker made its own (Private_Dirty + Private_Clean at its end)
    shared MiB     what it still shares with the collector (Shared_Clean + Shared_Dirty)
    wall s         the shoal run

--suite DIR measures a real suite (the biggest: $SHOAL_SUITES/src/packaging-26.4, 64k tests);
--tests N generates N trivial tests; --imports imports those modules in every process first,
to stand in for a large application (e.g. numpy,hypothesis,cryptography).
"""

import json
import shlex
import sys

from measure import BENCH_DIR, checked, common_args, env_for, logs_dir, median, shoal_run, suite_dir, suite_options

MODES = {"default": "0", "freeze": "1"}


def main() -> int:
    p = common_args(__doc__)
    suite_options(p)
    p.add_argument("--imports", default="", help="modules every process imports first (comma-separated)")
    args = p.parse_args()
    checked(args)
    cwd = suite_dir(args)
    env = env_for(args)
    # A directory of its own: bench/ holds a queue.py, which would shadow the standard one.
    env["PYTHONPATH"] = str(BENCH_DIR / "probe") + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["SHOAL_FORK_PROBE_IMPORTS"] = args.imports
    logs = logs_dir(args)
    extra = ["-p", "fork_probe", *shlex.split(args.pytest_args)]
    rows = {mode: [] for mode in MODES}
    for i in range(args.repeat):
        for mode, freeze in MODES.items():
            out = args.work_dir / f"fork-{cwd.name}-{mode}-{i}"
            out.mkdir(exist_ok=True)
            for old in out.glob("*.json"):
                old.unlink()
            env.update(SHOAL_FORK_PROBE_OUT=str(out), SHOAL_FORK_PROBE_FREEZE=freeze)
            r = shoal_run(args, cwd, env, logs / f"fork-{cwd.name}-{mode}-{i}.log", extra)
            collector = json.loads((out / "collector.json").read_text())
            workers = [json.loads(f.read_text()) for f in sorted(out.glob("gw*.json"))]
            if len(workers) != args.workers:
                sys.exit(f"failed to read every worker's figures: {len(workers)} of {args.workers} in {out}")
            row = {
                "collector": collector["Rss"], "fork": collector["fork_s"], "wall": r["wall_s"],
                "faults": sum(w["minflt"] for w in workers) / max(1, sum(w["tests"] for w in workers)),
                "private": median([w.get("Private_Dirty", 0) + w.get("Private_Clean", 0) for w in workers]),
                "shared": median([w.get("Shared_Dirty", 0) + w.get("Shared_Clean", 0) for w in workers]),
                "pss": median([w["Pss"] for w in workers]),
                "tracked": collector["gc_tracked"], "items": collector["items"],
            }
            rows[mode].append(row)
            print(f"  {mode:7} #{i}: collector {row['collector'] / 2**20:.0f} MiB, fork {row['fork'] * 1e3:.1f} ms, "
                  f"{row['faults']:.2f} faults/test, private {row['private'] / 2**20:.0f} MiB, "
                  f"{r['wall_s']:.2f}s wall, load {r['load1_before']:.1f}", file=sys.stderr)
    first = rows["default"][0]
    print(f"{cwd.name}: {first['items']} tests, {first['tracked']} objects tracked by gc in the collector, "
          f"-n {args.workers}, median of {args.repeat}")
    print(f"  {'mode':8} {'collector MiB':>13} {'fork ms':>8} {'faults/test':>11} {'private MiB':>11} "
          f"{'shared MiB':>10} {'pss MiB':>8} {'wall s':>7}")
    for mode, rs in rows.items():
        m = {k: median([r[k] for r in rs]) for k in rs[0]}
        print(f"  {mode:8} {m['collector'] / 2**20:13.0f} {m['fork'] * 1e3:8.1f} {m['faults']:11.2f} "
              f"{m['private'] / 2**20:11.0f} {m['shared'] / 2**20:10.0f} {m['pss'] / 2**20:8.0f} {m['wall']:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
