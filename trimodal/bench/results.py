"""The results of one ``trimodal bench`` run as typed objects, and their ``results.json`` form.

``results.json`` layout::

    {"meta": {...BenchMeta}, "levels": [LevelResult...], "perf": [LevelResult...],
     "tuning": [{...TuningResult}], "notes": [...]}

``levels`` are every baseline's measurements (same client code, same workload): closed-loop levels
(``mode: concurrency``) and open-loop Poisson levels (``mode: rate``), each repeated (``repetition``) and
interleaved with the other baselines'; ``perf`` are perf_analyzer's levels of the configured Triton server.
``tuning`` is kept for older runs (no longer written).
Reading accepts every results.json written so far (unknown keys are ignored, missing ones take defaults).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from trimodal.bench.loadgen import LevelResult
from trimodal.errors import BenchError

LOGGER = logging.getLogger(__name__)

RESULTS_FILE = "results.json"


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {key: value for key, value in data.items() if key in names}


SPARSE = frozenset({"rate_fractions", "precision_cpu", "accuracy"})  # left out of the JSON while empty


@dataclass
class BenchMeta:
    """How, where and on what a run was measured (None = not recorded)."""

    timestamp: str = ""
    machine: str = "?"
    quick: bool = False
    duration_s: float | None = None
    warmup_s: float | None = None
    concurrencies: list[int] = field(default_factory=list)
    mix: str | None = None
    workload_size: int | None = None
    serving: dict[str, Any] = field(default_factory=dict)
    instances: dict[str, int] = field(default_factory=dict)
    load_before: float | None = None
    seconds: float | None = None
    perf_analyzer: str | None = None  # why perf_analyzer was skipped
    saturation_rps: float | None = None
    saturation_source: str | None = None
    load_after: float | None = None
    cores: int | None = None
    repetitions: int | None = None  # measurements of each level (interleaved)
    rate_fractions: list[float] = field(default_factory=list)  # Poisson levels, fractions of the probe
    rate_duration_s: float | None = None
    saturation_probe_rps: float | None = None  # closed-loop probe of Triton as configured the rates scale
    servers_started_s: float | None = None  # seconds to start and warm every server
    commit: str | None = None  # git commit of the code (``+dirty`` with uncommitted changes)
    stale_configs: list[str] | None = None  # repository configs that differ from a fresh render of the spec
    precision_cpu: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, dict[str, int]] = field(default_factory=dict)  # per Triton variant, same requests

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (unrecorded fields left out: None, and the :data:`SPARSE` ones while empty)."""
        return {
            key: value for key, value in asdict(self).items()
            if value is not None and (key not in SPARSE or (value != [] and value != {}))
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchMeta:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        return cls(**_known(cls, data))


@dataclass
class TuningResult:
    """One serving variant compared with the configured server (``levels`` empty when it failed)."""

    name: str
    settings: str
    summary: str
    levels: list[LevelResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``levels`` left out when empty)."""
        data: dict[str, Any] = {"name": self.name, "settings": self.settings, "summary": self.summary}
        if self.levels:
            data["levels"] = [level.to_dict() for level in self.levels]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TuningResult:
        """Inverse of :meth:`to_dict`."""
        levels = [LevelResult.from_dict(x) for x in data.get("levels", [])]
        return cls(str(data.get("name", "?")), str(data.get("settings", "")), str(data.get("summary", "")), levels)


@dataclass
class BenchResults:
    """Everything one run measured."""

    meta: BenchMeta = field(default_factory=BenchMeta)
    levels: list[LevelResult] = field(default_factory=list)
    perf: list[LevelResult] = field(default_factory=list)
    tuning: list[TuningResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the ``results.json`` layout)."""
        return {
            "meta": self.meta.to_dict(),
            "levels": [level.to_dict() for level in self.levels],
            "perf": [level.to_dict() for level in self.perf],
            "tuning": [variant.to_dict() for variant in self.tuning],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResults:
        """Inverse of :meth:`to_dict`."""
        return cls(
            meta=BenchMeta.from_dict(data.get("meta", {})),
            levels=[LevelResult.from_dict(x) for x in data.get("levels", [])],
            perf=[LevelResult.from_dict(x) for x in data.get("perf", [])],
            tuning=[TuningResult.from_dict(x) for x in data.get("tuning", [])],
            notes=[str(x) for x in data.get("notes", [])],
        )

    def to_json(self) -> str:
        """The ``results.json`` text (NaN latencies of failed levels are written as ``NaN``)."""
        return json.dumps(self.to_dict(), indent=1, default=str) + "\n"

    def save(self, folder: Path) -> Path:
        """Write ``results.json`` into ``folder``.

        Args:
            folder: the results folder (created if needed).

        Returns:
            The file written.
        """
        path = Path(folder) / RESULTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: Path) -> BenchResults:
        """Read ``results.json`` of a results folder.

        Args:
            folder: the results folder.

        Returns:
            The results.

        Raises:
            BenchError: if the file is missing or invalid.
        """
        path = Path(folder) / RESULTS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls.from_dict(data)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise BenchError(f"cannot read benchmark results {path}: {exc}") from None
