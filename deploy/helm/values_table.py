"""The values table of deploy/helm/trimodal/README.md, generated from values.yaml and its comments.

Each value's description is its trailing comment, else the comment block right above it. Maps of Kubernetes objects
(resources, securityContext, ...) are one row with their default in YAML flow style.

    python deploy/helm/values_table.py            # rewrite the table in the chart's README
    python deploy/helm/values_table.py --check    # exit 1 when the README's table is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent / "trimodal"
START, END = "<!-- values-table:start -->", "<!-- values-table:end -->"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):(?P<rest>.*)$")
# Sections rendered as one row: Kubernetes objects, free-form maps and lists of objects.
WHOLE = (
    "resources",
    "securityContext",
    "containerSecurityContext",
    "strategy",
    "behavior",
    "constraints",
    "hosts",
    "annotations",
    "labels",
    "podAnnotations",
    "podLabels",
    "nodeSelector",
)


def _comment(rest: str) -> str:
    """The trailing comment of a YAML line's remainder (outside quotes)."""
    quote = None
    for i, ch in enumerate(rest):
        if ch in "\"'" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (i == 0 or rest[i - 1] == " "):
            return rest[i + 1 :].strip()
    return ""


def descriptions(text: str) -> dict[str, str]:
    """Key path (a.b.c) -> description, from the comments of values.yaml."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    block: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped.lstrip("#").strip())
            continue
        match = KEY.match(line)
        if not match:
            if not stripped:
                block = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [match["key"]])
        stack.append((indent, match["key"]))
        trailing = _comment(match["rest"])
        out[path] = trailing or " ".join(b for b in block if b)
        block = []
    return out


def rows(values: dict[str, Any], described: dict[str, str], prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, description) for every value a user sets."""
    out = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in WHOLE:
            out.extend(rows(value, described, f"{path}."))
            continue
        default = json.dumps(value, separators=(", ", ": "))
        out.append((path, default, described.get(path, "")))
    return out


def table(chart: Path = CHART) -> str:
    """The Markdown table of every value: key, default, description."""
    text = (chart / "values.yaml").read_text()
    lines = ["| key | default | description |", "| --- | --- | --- |"]
    for key, default, description in rows(yaml.safe_load(text), descriptions(text)):
        shown = default if len(default) <= 60 else default[:57] + "..."
        lines.append(f"| `{key}` | `{shown}` | {description.replace('|', '/')} |")
    return "\n".join(lines)


def render_readme(readme: str, chart: Path = CHART) -> str:
    """``readme`` with the text between the table markers replaced by a fresh table."""
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{table(chart)}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or ``--check``) the chart README's values table; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the README's table is current")
    args = parser.parse_args(argv)
    path = CHART / "README.md"
    current = path.read_text()
    wanted = render_readme(current)
    if args.check:
        if current != wanted:
            print(f"{path}: the values table is out of date: python deploy/helm/values_table.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
