"""Marked regions of a Markdown document: ``<!-- evidence:NAME -->`` ... ``<!-- /evidence -->``.

The marker lines may be indented (a region inside a list item); the region's body is every line between
them and is replaced as a whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from trimodal.errors import EvidenceError

REGION = re.compile(
    r"^(?P<open>[ \t]*<!-- evidence:(?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(?P<close>^[ \t]*<!-- /evidence -->)",
    re.MULTILINE | re.DOTALL,
)
OPENING = re.compile(r"<!-- evidence:([a-z0-9-]+) -->")
CLOSING = "<!-- /evidence -->"


def regions(text: str) -> dict[str, str]:
    """The bodies of a document's regions by name.

    Args:
        text: the document.

    Returns:
        ``{name: body}`` in document order; a body ends with a newline (or is empty).

    Raises:
        EvidenceError: if a marker is unpaired or a name is used twice.
    """
    found: dict[str, str] = {}
    for match in REGION.finditer(text):
        if match.group("name") in found:
            raise EvidenceError(f"evidence region {match.group('name')!r} appears twice")
        found[match.group("name")] = match.group("body")
    if len(OPENING.findall(text)) != len(found) or text.count(CLOSING) != len(found):
        raise EvidenceError(f"unpaired evidence marker: {len(found)} complete regions, "
                            f"{len(OPENING.findall(text))} openings, {text.count(CLOSING)} closings")  # fmt: skip
    return found


def replace_regions(text: str, rendered: Mapping[str, str]) -> str:
    """``text`` with the body of every region replaced by its rendering.

    Args:
        text: the document.
        rendered: ``{name: body}``; every region of the document must have one.

    Returns:
        The new document (equal to ``text`` when every region is up to date).

    Raises:
        EvidenceError: if a region has no rendering (or the markers are malformed).
    """
    unknown = sorted(set(regions(text)) - set(rendered))
    if unknown:
        raise EvidenceError(f"no renderer for evidence region(s) {', '.join(unknown)}; known: {', '.join(rendered)}")

    def body(match: re.Match[str]) -> str:
        new = rendered[match.group("name")]
        return match.group("open") + new + ("" if not new or new.endswith("\n") else "\n") + match.group("close")

    return REGION.sub(body, text)


def stale_regions(text: str, rendered: Mapping[str, str]) -> list[str]:
    """Names of the regions whose body differs from their rendering (empty when the document is up to date)."""
    fresh = regions(replace_regions(text, rendered))
    return [name for name, current in regions(text).items() if current != fresh[name]]
