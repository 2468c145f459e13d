"""List functions over a line limit (default 80) in resid_widgets/ (Python, via ast) and js/src/
(TypeScript: a declaration line, then its braces counted to the closing one), and files over 600
lines. Usage: python scripts/long_functions.py [--limit N] [--root CHECKOUT]
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TS_DECL = re.compile(
    r"^\s*(export\s+)?(default\s+)?(async\s+)?function\s*\*?\s*(\w+)"
    r"|^\s*(?:(?:private|public|protected|static|async|readonly|get|set)\s+)*(\w+)\s*(?:<[^>]*>)?\(.*\)\s*(?::\s*[^={;]+)?\{\s*$"
)


def python_functions(root: Path):
    for path in sorted((root / "resid_widgets").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(root), node.name, node.end_lineno - node.lineno + 1


def ts_functions(root: Path):
    for path in sorted((root / "js/src").glob("*.ts")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            m = TS_DECL.match(line)
            if not m or re.match(r"^\s*(if|for|while|switch|catch|return|else)\b", line):
                continue
            depth, j = 0, i
            while j < len(lines):
                depth += lines[j].count("{") - lines[j].count("}")
                if depth <= 0 and j > i or (depth == 0 and "{" in line and j == i and line.rstrip().endswith("}")):
                    break
                j += 1
            yield path.relative_to(root), m.group(4) or m.group(5), j - i + 1


if __name__ == "__main__":
    limit = int(sys.argv[sys.argv.index("--limit") + 1]) if "--limit" in sys.argv else 80
    root = Path(sys.argv[sys.argv.index("--root") + 1]) if "--root" in sys.argv else ROOT
    for kind, found in (("python", python_functions(root)), ("ts", ts_functions(root))):
        long = [(p, n, k) for p, n, k in found if k > limit]
        print(f"{kind} functions over {limit} lines: {len(long)}")
        for p, n, k in long:
            print(f"  {k:4d}  {p}:{n}")
    files = [p for p in list((root / "resid_widgets").rglob("*.py")) + list((root / "js/src").glob("*.ts"))]
    big = [(len(p.read_text(encoding="utf-8").splitlines()), p.relative_to(root)) for p in files]
    big = sorted((n, p) for n, p in big if n > 600)
    print(f"files over 600 lines: {len(big)}")
    for n, p in big:
        print(f"  {n:5d}  {p}")
