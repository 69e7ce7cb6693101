"""The suite's cost, measured: the slowest tests and each file's total from pytest's junit XML.

`make test` writes logs/pytest.xml; this prints the slowest twenty tests and the files by total
time (what README "Development" quotes). With --write it stores each file's seconds in
tests/file_seconds.json, which tests/conftest.py uses to hand the longest files to the workers
first (pytest-xdist --dist loadfile takes files in collection order), so no long file starts last.

    python scripts/test_times.py [logs/pytest.xml] [--write]
"""

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILE_SECONDS = ROOT / "tests" / "file_seconds.json"


def read_cases(report: Path) -> list[tuple[str, str, float]]:
    """(file, test name, seconds) of every test case in a junit XML report."""
    cases = []
    for case in ET.parse(report).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")[-1]  # "tests.test_x" -> test_x
        cases.append((f"{module}.py", case.get("name", "?"), float(case.get("time", 0.0))))
    return cases


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    report = Path(args[0]) if args else ROOT / "logs" / "pytest.xml"
    if not report.is_file():
        print(f"test_times: no report at {report} (make test writes it)", file=sys.stderr)
        return 1
    cases = read_cases(report)
    per_file: dict[str, float] = defaultdict(float)
    for file, _, seconds in cases:
        per_file[file] += seconds
    total = sum(per_file.values())
    print(f"{len(cases)} tests, {total:.0f} s of test time in all (both workers); the slowest twenty:")
    for file, name, seconds in sorted(cases, key=lambda case: -case[2])[:20]:
        print(f"  {seconds:7.1f} s  {file}::{name}")
    print("by file:")
    for file, seconds in sorted(per_file.items(), key=lambda item: -item[1]):
        print(f"  {seconds:7.1f} s  {file}")
    if "--write" in argv:
        ordered = dict(sorted(((f, round(s, 1)) for f, s in per_file.items()), key=lambda item: -item[1]))
        FILE_SECONDS.write_text(json.dumps(ordered, indent=2) + "\n")
        print(f"wrote {FILE_SECONDS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
