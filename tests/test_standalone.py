"""A plain `git clone` must pass its tests: nothing the suite reads may live outside the repository."""

from __future__ import annotations

import re

from tests.conftest import REPO

# A path built from the repository's parent, or a literal path into a sibling folder.
OUTSIDE = re.compile(r"REPO\.parent|\.\./shared|parent\.parent\.parent\s*/")


def test_no_test_reads_files_beside_the_repository():
    offenders = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
                 for path in sorted((REPO / "tests").rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if OUTSIDE.search(line) and path.name != "test_standalone.py"]
    assert not offenders, "tests read files outside the repository:\n" + "\n".join(offenders)


def test_recorded_metrics_fixtures_are_in_the_repository():
    from tests.telemetry.conftest import METRICS_FIXTURES

    assert METRICS_FIXTURES.is_relative_to(REPO)
    assert sorted(p.name for p in METRICS_FIXTURES.glob("*.txt")), "no recorded /metrics bodies"
