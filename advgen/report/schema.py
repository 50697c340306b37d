"""The evaluation report: plain dataclasses that round-trip through JSON (``schema_version: 1``).

One :class:`Report` per ``advgen evaluate`` run records the classifier's metrics BEFORE and AFTER
retraining on generated data, how much data each generator contributed, the gates it was held to,
and where it ran. Renderers (Markdown, HTML, JUnit) and ``advgen report compare`` read only this
object, so a report saved today can be re-rendered or compared later without the model.

Numbers are snake_case JSON fields holding numbers (never display strings). ``None`` means "not
measured" (that attack was switched off), which is different from a measured 0.0.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from importlib import metadata
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from .. import __version__
from ..errors import InputError

SCHEMA_VERSION = 1
STAGES = ("before", "after")


@dataclass(frozen=True)
class MetricInfo:
    """How to show and judge one fraction-valued :class:`StageMetrics` field."""

    field: str
    label: str
    higher_is_better: bool


#: The fraction-valued metrics, in display order; compare, charts and tables iterate over this.
METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("clean_accuracy", "clean accuracy", True),
    MetricInfo("onepixel_robust_accuracy", "one-pixel robust accuracy", True),
    MetricInfo("onepixel_vulnerable_rate", "one-pixel vulnerable rate", False),
    MetricInfo("pgd_robust_accuracy", "PGD robust accuracy", True),
    MetricInfo("advgan_robust_accuracy", "AdvGAN robust accuracy", True),
    MetricInfo("advgan_success_rate", "AdvGAN success rate", False),
)
METRIC_INFO: dict[str, MetricInfo] = {m.field: m for m in METRICS}

#: Integer counters of the exact one-pixel search, shown next to the metrics.
COUNTS: tuple[str, ...] = ("onepixel_images", "onepixel_vulnerable", "onepixel_candidates", "onepixel_pruned")


def utc_now() -> str:
    """The current time as ISO 8601 UTC with a ``Z`` suffix, to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(kw_only=True)
class StageMetrics:
    """What was measured on the test subset at one stage ("before" or "after" retraining).

    Fractions are in [0, 1]; ``None`` means the attack was not run. ``onepixel_vulnerable_rate`` is
    ``onepixel_vulnerable / onepixel_images`` and is filled in automatically when left ``None`` while
    images were searched. ``seconds`` holds per-attack wall time, e.g. ``{"onepixel": 12.5}``.
    """

    clean_accuracy: float
    onepixel_robust_accuracy: float | None = None
    onepixel_images: int = 0
    onepixel_vulnerable: int = 0
    onepixel_vulnerable_rate: float | None = None
    onepixel_candidates: int = 0
    onepixel_pruned: int = 0
    pgd_robust_accuracy: float | None = None
    advgan_success_rate: float | None = None
    advgan_robust_accuracy: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.onepixel_vulnerable_rate is None and self.onepixel_images > 0:
            self.onepixel_vulnerable_rate = self.onepixel_vulnerable / self.onepixel_images

    def get(self, metric: str) -> float | None:
        """The value of a fraction metric by field name (``None`` when not measured)."""
        if metric not in METRIC_INFO:
            raise InputError(f"unknown metric {metric!r}; choose one of {', '.join(METRIC_INFO)}")
        return getattr(self, metric)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the fields in declaration order."""
        d = dataclasses.asdict(self)
        d["seconds"] = dict(self.seconds)
        return d

    @classmethod
    def from_dict(cls, data: Any, where: str = "stage") -> "StageMetrics":
        """Build from parsed JSON, refusing wrong, missing or unknown fields with one :class:`InputError`."""
        d = _expect_dict(data, where)
        _check_keys(d, cls, where)
        kwargs: dict[str, Any] = {"clean_accuracy": _fraction(d["clean_accuracy"], f"{where}.clean_accuracy")}
        for m in METRICS:
            if m.field != "clean_accuracy" and m.field in d:
                kwargs[m.field] = _fraction(d[m.field], f"{where}.{m.field}", optional=True)
        for name in COUNTS:
            if name in d:
                kwargs[name] = _count(d[name], f"{where}.{name}")
        if "seconds" in d:
            kwargs["seconds"] = _seconds_map(d["seconds"], f"{where}.seconds")
        stage = cls(**kwargs)
        if stage.onepixel_vulnerable > stage.onepixel_images:
            raise InputError(f"{where}: onepixel_vulnerable ({stage.onepixel_vulnerable}) exceeds "
                             f"onepixel_images ({stage.onepixel_images})")
        return stage


@dataclass(kw_only=True)
class Gate:
    """One pass/fail threshold: ``stage.metric >= threshold``.

    ``name`` is what the user typed (clean, onepixel, pgd, advgan); ``metric`` the
    :class:`StageMetrics` field it reads. ``value`` is ``None`` when the metric was not measured, and
    then the gate fails; ``reason`` says why in words.
    """

    name: str
    metric: str
    threshold: float
    stage: str = "after"
    value: float | None = None
    passed: bool = False
    reason: str = ""

    @property
    def label(self) -> str:
        """``after.clean >= 0.97``: a stable, human-readable id used in tables and JUnit test names."""
        return f"{self.stage}.{self.name} >= {self.threshold:g}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "gate") -> "Gate":
        """Build from parsed JSON; the name/metric pair and the stage must be ones advgen knows."""
        from .gates import GATE_METRICS  # local: gates imports this module

        d = _expect_dict(data, where)
        _check_keys(d, cls, where)
        name = _string(d["name"], f"{where}.name")
        if name not in GATE_METRICS:
            raise InputError(f"{where}.name: unknown gate {name!r}; choose one of {', '.join(GATE_METRICS)}")
        metric = _string(d["metric"], f"{where}.metric")
        if metric != GATE_METRICS[name]:
            raise InputError(f"{where}.metric: gate {name!r} reads {GATE_METRICS[name]!r}, not {metric!r}")
        stage = _string(d.get("stage", "after"), f"{where}.stage")
        if stage not in STAGES:
            raise InputError(f"{where}.stage must be one of {', '.join(STAGES)}, got {stage!r}")
        passed = d.get("passed", False)
        if not isinstance(passed, bool):
            raise InputError(f"{where}.passed must be true or false, got {passed!r}")
        return cls(name=name, metric=metric, threshold=_fraction(d["threshold"], f"{where}.threshold"), stage=stage,
                   value=_fraction(d.get("value"), f"{where}.value", optional=True), passed=passed,
                   reason=_string(d.get("reason", ""), f"{where}.reason"))


@dataclass(kw_only=True)
class Report:
    """Everything one ``advgen evaluate`` run found; see the module docstring for the conventions.

    ``after`` is ``None`` when no retraining happened. ``passed`` is true when every gate passed (and
    when there are no gates); :meth:`set_gates` keeps the two consistent. ``artifacts`` maps a picture
    name to a path relative to the report's directory, e.g. ``{"examples_before": "examples_before.png"}``.
    """

    before: StageMetrics
    after: StageMetrics | None = None
    schema_version: int = SCHEMA_VERSION
    tool: dict[str, str] = field(default_factory=lambda: {"name": "advgen", "version": __version__})
    created: str = field(default_factory=utc_now)
    seed: int | None = None
    machine: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    augmentation: dict[str, int] = field(default_factory=dict)
    gates: list[Gate] = field(default_factory=list)
    passed: bool = True
    notes: list[str] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)

    @property
    def final(self) -> StageMetrics:
        """The last measured stage: ``after`` when retraining happened, else ``before``."""
        return self.after if self.after is not None else self.before

    @property
    def final_stage(self) -> str:
        return "after" if self.after is not None else "before"

    def stage(self, name: str) -> StageMetrics | None:
        """The metrics of stage ``before`` or ``after`` (``None`` for an absent after stage)."""
        if name not in STAGES:
            raise InputError(f"unknown stage {name!r}; choose one of {', '.join(STAGES)}")
        return self.before if name == "before" else self.after

    def set_gates(self, gates: list[Gate]) -> "Report":
        """Record evaluated gates and set ``passed`` to whether all of them passed."""
        self.gates = list(gates)
        self.passed = all(g.passed for g in self.gates)
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict in a stable, reader-friendly key order."""
        return {
            "schema_version": self.schema_version,
            "tool": dict(self.tool),
            "created": self.created,
            "seed": self.seed,
            "machine": dict(self.machine),
            "config": dict(self.config),
            "timings": dict(self.timings),
            "before": self.before.to_dict(),
            "after": self.after.to_dict() if self.after is not None else None,
            "augmentation": dict(self.augmentation),
            "gates": [g.to_dict() for g in self.gates],
            "passed": self.passed,
            "notes": list(self.notes),
            "artifacts": dict(self.artifacts),
        }

    def to_json(self) -> str:
        """Indented JSON text ending in a newline (what ``report.json`` holds).

        Paths, devices, enums and NumPy/torch scalars in ``config``/``machine`` are written as plain
        values, so a run is never lost to a stray type at the very end; NaN and infinity are refused
        with the field's name, because ``None`` is how a report says "not measured".
        """
        data = self.to_dict()
        bad = _first_non_finite(data, "report")
        if bad is not None:
            raise ValueError(f"{bad[0]} is {bad[1]}; a report holds finite numbers (None = not measured)")
        return json.dumps(data, indent=2, allow_nan=False, default=_json_default) + "\n"

    @classmethod
    def from_dict(cls, data: Any, where: str = "report") -> "Report":
        """Build and validate from parsed JSON; any problem is one :class:`InputError` naming the field."""
        d = _expect_dict(data, where)
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise InputError(f"{where}: unsupported schema_version {version!r}; this advgen reads "
                             f"schema_version {SCHEMA_VERSION}")
        _check_keys(d, cls, where, required=("tool", "created", "before"))
        tool = _expect_dict(d["tool"], f"{where}.tool")
        for key in ("name", "version"):
            _string(tool.get(key), f"{where}.tool.{key}")
        created = _string(d["created"], f"{where}.created")
        try:
            datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            raise InputError(f"{where}.created must be an ISO 8601 time, got {created!r}") from None
        seed = d.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InputError(f"{where}.seed must be an integer or null, got {seed!r}")
        after = d.get("after")
        gates_raw = d.get("gates", [])
        if not isinstance(gates_raw, list):
            raise InputError(f"{where}.gates must be a list, got {type(gates_raw).__name__}")
        notes = d.get("notes", [])
        if not isinstance(notes, list):
            raise InputError(f"{where}.notes must be a list of strings")
        report = cls(
            schema_version=version,
            tool={k: str(v) for k, v in tool.items()},
            created=created,
            seed=seed,
            machine=_expect_dict(d.get("machine", {}), f"{where}.machine"),
            config=_expect_dict(d.get("config", {}), f"{where}.config"),
            timings=_seconds_map(d.get("timings", {}), f"{where}.timings"),
            before=StageMetrics.from_dict(d["before"], f"{where}.before"),
            after=None if after is None else StageMetrics.from_dict(after, f"{where}.after"),
            augmentation=_count_map(d.get("augmentation", {}), f"{where}.augmentation"),
            gates=[Gate.from_dict(g, f"{where}.gates[{i}]") for i, g in enumerate(gates_raw)],
            passed=d.get("passed", True),
            notes=[_string(n, f"{where}.notes[{i}]") for i, n in enumerate(notes)],
            artifacts=_artifact_map(d.get("artifacts", {}), f"{where}.artifacts"),
        )
        if not isinstance(report.passed, bool):
            raise InputError(f"{where}.passed must be true or false, got {report.passed!r}")
        if report.passed != all(g.passed for g in report.gates):
            raise InputError(f"{where}.passed is {str(report.passed).lower()} but its gates say "
                             f"{str(not report.passed).lower()}; the report was edited or is inconsistent")
        return report

    @classmethod
    def from_json(cls, text: str, where: str = "report") -> "Report":
        """Parse JSON text (``NaN``/``Infinity`` refused) and validate it."""
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except (json.JSONDecodeError, ValueError) as exc:
            raise InputError(f"{where} is not valid JSON: {exc}") from None
        return cls.from_dict(data, where)


def load_report(path: str | os.PathLike) -> Report:
    """Read and validate a ``report.json``; missing, unreadable or invalid files become :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"report not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read report {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return Report.from_json(text, where=str(path))


def machine_info(device: str | Any = "cpu") -> dict[str, Any]:
    """Where the run happened, for reproducing timings: platform, versions, device, CPU count, GPU name."""
    import torch

    dev = str(device)
    gpu = None
    if dev.startswith("cuda") and torch.cuda.is_available():
        try:
            gpu = torch.cuda.get_device_name(torch.device(dev))
        except (RuntimeError, AssertionError, ValueError):
            gpu = None
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": _package_version("torchvision"),
        "torchattacks": _package_version("torchattacks"),
        "device": dev,
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
    }


# --- validation helpers: each raises one InputError naming the JSON path -------------------------

def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _json_default(value: Any) -> Any:
    """Plain JSON for the odd types a run's settings carry (Path, torch.device, Enum, scalars, sets)."""
    if isinstance(value, Enum):
        return value.value
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        return value.item()  # NumPy / torch scalar
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()
    return str(value)  # Path, torch.device, anything else with a sensible str()


def _first_non_finite(value: Any, where: str) -> tuple[str, float] | None:
    """The path and value of the first NaN/infinity inside ``value``, if any."""
    if isinstance(value, float) and not math.isfinite(value):
        return where, value
    if isinstance(value, dict):
        items = ((f"{where}.{k}", v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for w, v in items:
        found = _first_non_finite(v, w)
        if found is not None:
            return found
    return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a report")


def _expect_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError(f"{where} must be a JSON object, got {_kind(value)}")
    return value


def _check_keys(d: dict[str, Any], cls: type, where: str, required: tuple[str, ...] = ()) -> None:
    """Unknown keys are refused (they are usually typos); so are missing required ones."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise InputError(f"{where}: unknown field(s) {', '.join(unknown)}")
    missing = [name for name, f in fields.items()
               if (name in required or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING))
               and name not in d]
    if missing:
        raise InputError(f"{where}: missing field(s) {', '.join(missing)}")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _fraction(value: Any, where: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    x = _number(value, where)
    if not 0.0 <= x <= 1.0:
        raise InputError(f"{where} must be in [0, 1], got {value!r}")
    return x


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{where} must be a non-negative integer, got {value!r}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where} must be a string, got {_kind(value)}")
    return value


def _seconds_map(value: Any, where: str) -> dict[str, float]:
    d = _expect_dict(value, where)
    out = {}
    for k, v in d.items():
        x = _number(v, f"{where}.{k}")
        if x < 0:
            raise InputError(f"{where}.{k} must be >= 0 seconds, got {v!r}")
        out[k] = x
    return out


def _count_map(value: Any, where: str) -> dict[str, int]:
    return {k: _count(v, f"{where}.{k}") for k, v in _expect_dict(value, where).items()}


def _artifact_map(value: Any, where: str) -> dict[str, str]:
    """Artifact paths must stay inside the report's directory: relative, no ``..``, no drive."""
    out = {}
    for k, v in _expect_dict(value, where).items():
        p = _string(v, f"{where}.{k}")
        posix, win = PurePosixPath(p), PureWindowsPath(p)
        if not p or posix.is_absolute() or win.is_absolute() or win.drive or ".." in posix.parts or ".." in win.parts:
            raise InputError(f"{where}.{k} must be a path relative to the report's directory, got {p!r}")
        out[k] = p
    return out
