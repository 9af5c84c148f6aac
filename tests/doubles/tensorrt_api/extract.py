"""Extract the published Python surface of one TensorRT release from NVIDIA's public sources.

Reads a checkout of https://github.com/NVIDIA/TensorRT at a release tag: the pybind11 bindings
(``python/src/**/*.cpp``: every ``py::class_<...>(m, "Name")`` with its ``.def``/``.def_property``/
``.def_readonly``/``.def_static`` names, every ``py::enum_<...>(m, "Name")`` with its ``.value`` names, every
module-level ``m.def``) and the C++ headers (``include/*.h``: the numeric value of every enumerator the bindings
name). The result is the JSON the test doubles in ``tests/doubles/tensorrt_<major>/`` are checked against
(``tests/unit/test_tensorrt_double.py``): a double may only expose what this file lists for its release.

Usage (the committed JSON files were made this way)::

    git -C TensorRT checkout v11.1   # or v10.16
    python tests/doubles/tensorrt_api/extract.py TensorRT > tests/doubles/tensorrt_api/surface_11_1.json
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

CLASS_RE = re.compile(r'py::class_<\s*([\w:]+)[^;(]*?>\s*\w*\s*[({]\s*m\s*,\s*"(\w+)"')
ENUM_RE = re.compile(r'py::enum_<\s*([\w:]+)\s*>\s*\(\s*\w+\s*,\s*"(\w+)"')
MODULE_DEF_RE = re.compile(r'\bm\.def\(\s*"(\w+)"')
BOUND_CLASS_RE = re.compile(r'py::class_<[^;(]*?>\s+(\w+)\s*[({]\s*m\s*,\s*"(\w+)"')
MEMBER_RE = re.compile(r'\.(def|def_property|def_property_readonly|def_readonly|def_readwrite|def_static)\(\s*"(\w+)"')
VALUE_RE = re.compile(r'\.value\(\s*"(\w+)"\s*,\s*([\w:]+)')
HEADER_ENUM_RE = re.compile(r"enum\s+(?:class\s+)?(\w+)\s*:\s*\w+\s*\{(.*?)\};", re.S)
ENUMERATOR_RE = re.compile(r"^\s*(k\w+)(?:\s+TRT_DEPRECATED_ENUM)?\s*(?:=\s*([^,/]+?))?\s*,?\s*(?://.*)?$")


def _statement(text: str, start: int) -> str:
    """The C++ statement starting at ``start``: up to the first ``;`` outside parentheses, braces and strings."""
    depth, index, quote = 0, start, None
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif text.startswith("//", index):
            index = text.find("\n", index)
            if index < 0:
                break
        elif char in "({[":
            depth += 1
        elif char in ")}]":
            depth -= 1
        elif char == ";" and depth == 0:
            return text[start:index]
        index += 1
    return text[start:]


def _call(text: str, open_paren: int) -> str:
    """The argument text of the call whose ``(`` is at ``open_paren``, up to its matching ``)``."""
    depth = 0
    for index in range(open_paren, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return text[open_paren : index + 1]
    return text[open_paren:]


def _members(statement: str) -> dict[str, Any]:
    """Method and property names of one ``py::class_`` statement, by kind, and the methods' argument names.

    ``signatures`` maps a method to the argument-name lists of its overloads (``"name"_a`` in the bindings);
    a method bound without argument names has an empty list.
    """
    kinds: dict[str, set[str]] = {"methods": set(), "properties": set(), "readonly": set(), "static": set()}
    signatures: dict[str, list[list[str]]] = {}
    for match in MEMBER_RE.finditer(statement):
        kind, name = match.groups()
        bucket = {"def": "methods", "def_static": "static", "def_property_readonly": "readonly",
                  "def_readonly": "readonly"}.get(kind, "properties")  # fmt: skip
        kinds[bucket].add(name)
        if kind in ("def", "def_static"):
            arguments = re.findall(r'"(\w+)"_a', _call(statement, statement.index("(", match.start())))
            if arguments not in signatures.setdefault(name, []):
                signatures[name].append(arguments)
    return {**{kind: sorted(names) for kind, names in kinds.items()}, "signatures": dict(sorted(signatures.items()))}


def _value(expr: str, known: dict[str, int], fallback: int) -> int:
    """An enumerator's initializer: an integer literal, an earlier enumerator, or a shift/or of those."""
    tokens = re.findall(r"\w+|<<|\||\(|\)", expr)
    if "".join(tokens) != re.sub(r"\s+", "", expr):
        return fallback
    try:
        words = [str(known[t]) if t in known else str(int(t, 0)) if t[0].isdigit() else t for t in tokens]
        return int(eval(" ".join(words), {"__builtins__": {}}))  # only integers and << | ( ) remain
    except (KeyError, ValueError, NameError, SyntaxError):
        return fallback


def _header_enums(root: Path) -> dict[str, dict[str, dict[str, int]]]:
    """``{header file: {C++ enum name: {enumerator: value}}}`` from include/*.h (implicit values counted)."""
    headers: dict[str, dict[str, dict[str, int]]] = {}
    for header in sorted((root / "include").glob("*.h")):
        text = re.sub(r"/\*.*?\*/", "", header.read_text(errors="replace"), flags=re.S)
        enums = headers.setdefault(header.name, {})
        for name, body in HEADER_ENUM_RE.findall(text):
            values, nxt = {}, 0
            for line in body.splitlines():
                match = ENUMERATOR_RE.match(line)
                if not match:
                    continue
                key, expr = match.group(1), match.group(2)
                if expr is not None:
                    nxt = _value(expr.strip(), values, nxt)
                values[key] = nxt
                nxt += 1
            enums.setdefault(name, values)
    return headers


def _enum_table(headers: dict[str, dict[str, dict[str, int]]], cpp_enum: str, source: Path) -> dict[str, int]:
    """The header enum a binding names: the ONNX parser's headers first for bindings under parsers/."""
    order = sorted(headers, key=lambda h: h.startswith("NvOnnx") != ("parsers" in source.parts))
    return next((headers[h][cpp_enum] for h in order if cpp_enum in headers[h]), {})


def _merge(current: dict[str, Any], members: dict[str, Any]) -> None:
    """Add one statement's members to a class's (a class may be bound in several statements)."""
    for kind in ("methods", "properties", "readonly", "static"):
        current[kind] = sorted(set(current.get(kind, [])) | set(members[kind]))
    signatures = current.setdefault("signatures", {})
    for name, overloads in members["signatures"].items():
        known = signatures.setdefault(name, [])
        known += [o for o in overloads if o not in known]
    current["signatures"] = dict(sorted(signatures.items()))


def extract(root: Path) -> dict[str, object]:
    """The surface of the TensorRT checkout at ``root`` (see the module docstring)."""
    header_enums = _header_enums(root)
    classes: dict[str, dict[str, Any]] = {}
    enums: dict[str, dict[str, int]] = {}
    functions: set[str] = set()
    for source in sorted((root / "python" / "src").rglob("*.cpp")):
        text = source.read_text(errors="replace")
        functions.update(MODULE_DEF_RE.findall(text))
        bound = [(m.group(2), m.start()) for m in CLASS_RE.finditer(text)]
        for variable, name in BOUND_CLASS_RE.findall(text):  # `py::class_<X> binding{m, "X"}; binding.def(...)`
            bound += [(name, use.start()) for use in re.finditer(rf"\b{variable}\s*\.def", text)]
        for name, start in bound:
            _merge(classes.setdefault(name, {}), _members(_statement(text, start)))
        for match in ENUM_RE.finditer(text):
            cpp_enum = match.group(1).split("::")[-1]
            table = _enum_table(header_enums, cpp_enum, source)
            values = {}
            for py_name, cpp_value in VALUE_RE.findall(_statement(text, match.start())):
                enumerator = cpp_value.split("::")[-1]
                values[py_name] = table.get(enumerator, -1)
            enums[match.group(2)] = values
    version = (root / "include" / "NvInferVersion.h").read_text()
    parts = [re.search(rf"#define TRT_{p}_ENTERPRISE (\d+)", version).group(1) for p in ("MAJOR", "MINOR", "PATCH")]
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    return {
        "tensorrt_version": ".".join(parts),
        "source": f"github.com/NVIDIA/TensorRT@{commit.strip()} python/src/**/*.cpp + include/*.h",
        "functions": sorted(functions),
        "classes": dict(sorted(classes.items())),
        "enums": dict(sorted(enums.items())),
    }


if __name__ == "__main__":
    json.dump(extract(Path(sys.argv[1])), sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")
