"""The real suites ``../shared/suites/setup.sh DIR`` prepares, as both bench scripts read them:
``suites.tsv`` (from shared/, else from DIR) names each suite's directory under ``DIR/src``;
without it, every directory there is a suite."""

from pathlib import Path


def read_suites(suites_dir: Path, suites_tsv: Path | None, shared: Path) -> list[dict]:
    """One dict per suite: ``name``, ``dir`` and, from suites.tsv, ``tests_serial`` and
    ``notes``."""
    src = suites_dir / "src"
    if suites_tsv is None:
        candidates = (shared / "suites.tsv", suites_dir / "suites.tsv")
        suites_tsv = next((c for c in candidates if c.is_file()), None)
    if suites_tsv is None:
        return [
            {"name": d.name.rsplit("-", 1)[0], "dir": d}
            for d in sorted(src.iterdir())
            if d.is_dir()
        ]
    lines = suites_tsv.read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:] if line.strip()]
    for row in rows:
        row["dir"] = src / row["dir"]
    return rows
