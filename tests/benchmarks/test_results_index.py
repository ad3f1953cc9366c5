"""benchmarks/results/README.md reaches every recorded result: each page is linked, with a date and a code version
that git knows, and every other file there belongs to a linked page or is named."""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"


def test_every_result_file_is_reachable_from_the_index():
    index = (RESULTS / "README.md").read_text()
    linked = set(re.findall(r"\]\(([\w.]+\.md)\)", index))
    pages = {p.name for p in RESULTS.glob("*.md")} - {"README.md"}
    assert linked == pages
    stems = sorted((Path(p).stem for p in linked), key=len, reverse=True)
    for f in RESULTS.iterdir():
        if f.suffix in (".json", ".png"):
            assert f.name in index or any(f.name.startswith(s) for s in stems), f.name


def test_each_row_carries_a_date_and_a_known_commit():
    rows = [ln for ln in (RESULTS / "README.md").read_text().splitlines() if ln.startswith("| [")]
    assert rows
    for row in rows:
        date, commit = re.search(r"\| (\d{4}-\d{2}-\d{2}), `([0-9a-f]{7,})` \|", row).groups()
        # An ancestor of HEAD, not merely an object here: a clean clone holds main's history only.
        ok = subprocess.run(["git", "merge-base", "--is-ancestor", commit, "HEAD"], cwd=REPO, capture_output=True)
        assert ok.returncode == 0, row[:80]
