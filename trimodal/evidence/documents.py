"""Check or rewrite the evidence regions of the project's documents (README.md)."""

from __future__ import annotations

from pathlib import Path

from trimodal.evidence.regions import replace_regions, stale_regions
from trimodal.evidence.render import DOCUMENTS, render_all
from trimodal.layout import Layout


def stale(layout: Layout | None = None) -> dict[Path, list[str]]:
    """The documents whose regions differ from a fresh rendering, with the stale region names.

    Args:
        layout: the project layout (default: this checkout).

    Returns:
        ``{document: [region, ...]}`` for every document with a stale region; empty when all are up to date.
    """
    layout = layout or Layout.default()
    rendered = render_all(layout)
    found = {}
    for name in DOCUMENTS:
        path = layout.root / name
        names = stale_regions(path.read_text(encoding="utf-8"), rendered)
        if names:
            found[path] = names
    return found


def write(layout: Layout | None = None) -> list[Path]:
    """Rewrite every document's regions from the committed artifacts.

    Args:
        layout: the project layout (default: this checkout).

    Returns:
        The documents that changed.
    """
    layout = layout or Layout.default()
    rendered = render_all(layout)
    changed = []
    for name in DOCUMENTS:
        path = layout.root / name
        text = path.read_text(encoding="utf-8")
        new = replace_regions(text, rendered)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed
