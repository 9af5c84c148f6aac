"""Command-line options shared by every trimodal command, declared once, and the clean-error wrapper.

The path options default to None and are resolved at call time through
:meth:`trimodal.layout.Layout.default` (flag, then ``TRIMODAL_*`` environment variable, then the project
folder), never computed at import::

    def command(spec: SpecOption = None, build_dir: BuildDirOption = None, repository: RepoOption = None):
        layout = Layout.default(build_dir=build_dir, repository=repository, spec=spec)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from trimodal.errors import TrimodalError

LOGGER = logging.getLogger(__name__)

DEFAULT_URL = "127.0.0.1:8001"
DEFAULT_TIMEOUT_S = 10.0

SpecOption = Annotated[
    Path | None, typer.Option("--spec", envvar="TRIMODAL_SPEC", help="pipeline.yaml (default: the project's).")
]
BuildDirOption = Annotated[
    Path | None,
    typer.Option("--build-dir", envvar="TRIMODAL_BUILD_DIR", help="Build outputs (default: <project>/build)."),
]
RepoOption = Annotated[
    Path | None,
    typer.Option(
        "--repository", envvar="TRIMODAL_REPOSITORY", help="Model repository (default: <project>/model_repository)."
    ),
]
UrlOption = Annotated[str, typer.Option("--url", envvar="TRIMODAL_URL", help="Triton gRPC host:port.")]
TimeoutOption = Annotated[float, typer.Option("--timeout", help="Deadline of each call, seconds.")]


@contextlib.contextmanager
def clean_errors() -> Iterator[None]:
    """Turn a :class:`~trimodal.errors.TrimodalError` into ``error: ...`` on stderr and exit code 1.

    Raises:
        typer.Exit: with code 1 when the body raised a TrimodalError (no traceback is shown).
    """
    try:
        yield
    except TrimodalError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
