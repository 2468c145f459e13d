"""Count metric names spelled as string literals outside the registry (issue 18's figure).

A literal is a quoted string ("kl", 'kl' or `kl`) equal to a metric name of
resid_widgets/payload/protocol.json, in resid_widgets/**/*.py and js/src/**/*.ts, outside
protocol.json / protocol.py / protocol.ts and the generated contract.gen.ts (the registry, its
readers and what is generated from it). Usage:

    python scripts/count_metric_literals.py [--tests] [--by-file] [--root CHECKOUT]

``--tests`` adds tests/ (not counted in the headline figure).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def count(roots: list[str], root_dir: Path = ROOT) -> Counter:
    spec = json.loads((root_dir / "resid_widgets/payload/protocol.json").read_text(encoding="utf-8"))
    names = [m["name"] for m in spec["metrics"]]
    pattern = re.compile(r"""(["'`])(%s)\1""" % "|".join(map(re.escape, names)))
    found: Counter = Counter()
    for root in roots:
        for path in sorted((root_dir / root).rglob("*")):
            if path.suffix not in (".py", ".ts") or path.stem == "protocol" or path.name.endswith(".gen.ts") or "node_modules" in path.parts:
                continue
            n = len(pattern.findall(path.read_text(encoding="utf-8", errors="replace")))
            if n:
                found[str(path.relative_to(root_dir))] = n
    return found


if __name__ == "__main__":
    roots = ["resid_widgets", "js/src"] + (["tests"] if "--tests" in sys.argv else [])
    root_dir = Path(sys.argv[sys.argv.index("--root") + 1]) if "--root" in sys.argv else ROOT
    found = count(roots, root_dir)
    if "--by-file" in sys.argv:
        for name, n in found.most_common():
            print(f"{n:4d}  {name}")
    print(sum(found.values()))
