#!/usr/bin/env python
"""Copy benchmark tables into README.md: never type a figure by hand.

    python benchmarks/render_readme.py

README.md marks each table with ``<!-- results:NAME -->`` ... ``<!-- /results:NAME -->``; the
text between becomes ``benchmarks/results/NAME.md`` plus a link to its plot and JSON.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PATTERN = re.compile(r"(<!-- results:(?P<name>[\w-]+) -->\n)(.*?)(<!-- /results:(?P=name) -->)", re.S)


def render(match: re.Match[str]) -> str:
    name = match["name"]
    table = REPO / "benchmarks" / "results" / f"{name}.md"
    if not table.is_file():
        body = f"_Not measured yet: run the benchmark that writes `benchmarks/results/{name}.json`._\n"
    else:
        plot = f" · plot: `benchmarks/results/{name}.png`" if (table.with_suffix(".png")).is_file() else ""
        data = f"\nData: `benchmarks/results/{name}.json`{plot}\n" if table.with_suffix(".json").is_file() else ""
        body = table.read_text() + data
    return match.group(1) + body + match.group(4)


def main() -> int:
    readme = REPO / "README.md"
    text, count = PATTERN.subn(render, readme.read_text())
    readme.write_text(text)
    print(f"rendered {count} result tables into {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
