"""The evaluation report: plain dataclasses that round-trip through JSON (``schema_version: 2``).

One :class:`Report` per ``advgen evaluate`` run holds, per stage ("before" and, after retraining,
"after"), a mapping from attack name to its :class:`Measurement`, plus the data each generator
contributed, the gates, and where the run happened. Renderers and ``advgen report compare`` read only
this object, so a report can be re-rendered or re-analysed later without the model.

The per-image outcomes are the source of truth. The JSON also carries, for readers such as ``jq``,
derived numbers: each measurement's ``rates`` (k, n, value, ci95) and the report's before/after
``changes`` (McNemar counts, p, effect). On load they are recomputed, and every one the file gives
must agree, so a hand-edited number is refused rather than silently believed; entries a different
metric registry would add or leave out are tolerated, so a new metric does not orphan old reports.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, ClassVar

from .._version import __version__
from ..errors import InputError
from ..stats import Rate, ones, paired
from . import metrics as registry
from .changes import ALPHA, change
from .fromjson import build
from .measurement import Measurement, measured
from .metrics import STAGES, Metric

SCHEMA_VERSION = 2
#: Float noise allowed when comparing a gate's value to its threshold (97/100 vs 0.97 must pass).
TOLERANCE = 1e-9
#: How far AutoAttack may fall below PGD on the same images before the report warns of gradient masking.
MASKING_GAP = 0.03


def utc_now() -> str:
    """The current time as ISO 8601 UTC with a ``Z`` suffix, to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(kw_only=True)
class Gate:
    """One evaluated threshold: ``stage.name >= threshold``.

    ``name`` is what the user typed (clean, onepixel, pgd, autoattack, worst, advgan), ``metric`` the registry key it
    reads (``pgd.robust``). ``value`` is ``None`` when the metric was not measured, and then the gate
    fails; ``reason`` says why in words.
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

    @staticmethod
    def passes(value: float | None, threshold: float) -> bool:
        """The verdict: measured, and at least ``threshold`` up to float noise (97/100 against 0.97 passes)."""
        return value is not None and value >= threshold - TOLERANCE

    def check(self) -> None:
        """A stored gate is re-evaluated by ``advgen report gate``, so its name and stage must be known."""
        gates = registry.gate_metrics()
        if self.name not in gates or self.metric != gates[self.name].key:
            raise ValueError(f"name: unknown gate {self.name!r} reading {self.metric!r}; known: "
                             + ", ".join(f"{k} ({m.key})" for k, m in gates.items()))
        if self.stage not in STAGES or max(self.threshold, self.value or 0.0) > 1.0:
            raise ValueError(f"stage must be one of {', '.join(STAGES)} and threshold and value in [0, 1]")
        if self.passed != self.passes(self.value, self.threshold):
            raise ValueError(f"passed is {str(self.passed).lower()} but its value {self.value} and threshold "
                             f"{self.threshold:g} say {str(not self.passed).lower()}; the report was edited")


@dataclass(kw_only=True)
class Provenance:
    """Who wrote a result file and when, with which seed, on what machine, under which settings."""

    schema_version: int = SCHEMA_VERSION
    tool: dict[str, str] = field(default_factory=lambda: {"name": "advgen", "version": __version__})
    created: str = field(default_factory=utc_now)
    seed: int | None = None
    machine: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class Report(Provenance):
    """Everything one ``advgen evaluate`` run found; see the module docstring for the conventions.

    ``stages["before"]["pgd"]`` is PGD's measurement before retraining; ``"after"`` is absent when no
    retraining happened, and an attack that was switched off is absent from its stage. ``passed`` is
    true when every gate passed (and when there are none); :meth:`set_gates` keeps the two consistent.
    ``artifacts`` maps a picture name to a path relative to the report's directory.
    """

    timings: dict[str, float] = field(default_factory=dict)
    stages: dict[str, dict[str, Measurement]]
    augmentation: dict[str, int] = field(default_factory=dict)
    gates: list[Gate] = field(default_factory=list)
    passed: bool = True
    notes: list[str] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    DERIVED: ClassVar[tuple[str, ...]] = ("changes", "warnings")  # written by to_dict, checked by from_dict

    @property
    def final_stage(self) -> str:
        """``after`` when retraining happened, else ``before``."""
        return "after" if "after" in self.stages else "before"

    def measurement(self, stage: str, metric: Metric) -> Measurement | None:
        """The measurement ``metric`` reads at ``stage``; ``None`` when its attack or outcomes were not recorded."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
        return measured(self.stages.get(stage, {}), metric)

    def rate(self, stage: str, metric: Metric) -> Rate | None:
        """``metric`` at ``stage``, or ``None`` when it was not measured there."""
        m = self.measurement(stage, metric)
        return None if m is None else m.metric_rate(metric)

    def shown_metrics(self) -> list[Metric]:
        """The registered metrics measured at some stage, in registry order."""
        return [m for m in registry.METRICS if any(self.measurement(s, m) for s in self.stages)]

    def warnings(self) -> list[str]:
        """Possible gradient masking: a stage where AutoAttack is more than ``MASKING_GAP`` below PGD.

        Both are read on the images both attacked (the first N of the test split). The gap must also
        be real: McNemar's exact test on the paired robust flags, p < 0.05, so a single image of a
        small sample does not raise the alarm.
        """
        found = []
        pgd, aa = registry.metric("pgd.robust"), registry.metric("autoattack.robust")
        for stage in self.stages:
            x, y = self.measurement(stage, pgd), self.measurement(stage, aa)
            if not (x and y):
                continue
            n = min(x.images, y.images)
            old, new = x.flags("robust")[:n], y.flags("robust")[:n]
            p, a, test = ones(old) / max(1, n), ones(new) / max(1, n), paired(old, new)
            if p - a > MASKING_GAP and test.p < ALPHA:
                found.append(f"possible gradient masking ({stage}): AutoAttack robust accuracy {a:.4f} is "
                             f"{100 * (p - a):.1f} points below PGD's {p:.4f} on the same {n} images "
                             f"(McNemar p = {test.p:.2g}), so PGD overstates robustness; trust the worst case")
        return found

    def set_gates(self, gates: list[Gate]) -> "Report":
        """Record evaluated gates and set ``passed`` to whether all of them passed."""
        self.gates = list(gates)
        self.passed = all(g.passed for g in self.gates)
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict in field order, with the derived ``rates`` and ``changes`` added."""
        data = asdict(self)
        for stage, attacks in self.stages.items():
            for attack, m in attacks.items():
                data["stages"][stage][attack]["rates"] = {
                    metric.name: m.metric_rate(metric).to_dict() for metric in registry.METRICS
                    if metric.attack == attack and m.carries(metric)}
        if "after" in self.stages:
            pairs = {m: (self.measurement("before", m), self.measurement("after", m)) for m in self.shown_metrics()}
            data["changes"] = {m.key: change(m, x, y).to_dict() for m, (x, y) in pairs.items() if x and y}
        data["warnings"] = self.warnings()
        return data

    def to_json(self) -> str:
        """Indented JSON text ending in a newline (what ``report.json`` holds).

        A report that would not load is not written: the data is checked as :meth:`from_dict` would
        (a NaN is named by its field). Odd types in ``config``/``machine`` (paths, devices, NumPy or
        torch scalars) are written as plain values, so a run is never lost to a stray type at the end.
        """
        data = self.to_dict()
        try:
            build(type(self), data, "report")
        except InputError as exc:
            raise ValueError(str(exc)) from None  # a bug in the caller, not bad user input
        return json.dumps(data, indent=2, allow_nan=False, default=_json_default) + "\n"

    def check(self) -> None:
        """What types cannot say: stage names, consistent verdict, sane numbers, paths inside the report."""
        if "before" not in self.stages or set(self.stages) - set(STAGES):
            raise ValueError(f"stages must have 'before' and at most 'after', got {', '.join(self.stages) or 'none'}")
        try:
            datetime.fromisoformat(self.created.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"created must be an ISO 8601 time, got {self.created!r}") from None
        if self.passed != all(g.passed for g in self.gates):
            raise ValueError(f"passed is {str(self.passed).lower()} but its gates say "
                             f"{str(not self.passed).lower()}; the report was edited or is inconsistent")
        for key, p in self.artifacts.items():
            posix, win = PurePosixPath(p), PureWindowsPath(p)
            if not p or posix.is_absolute() or win.is_absolute() or win.drive or ".." in posix.parts or ".." in win.parts:
                raise ValueError(f"artifacts.{key} must be a path relative to the report's directory, got {p!r}")

    @classmethod
    def from_dict(cls, data: Any, where: str = "report") -> "Report":
        """Build and validate from parsed JSON; any problem is one :class:`InputError` naming the JSON path."""
        if not isinstance(data, dict):
            raise InputError(f"{where} must be a JSON object, got {type(data).__name__}")
        if "variants" in data and "stages" in data:
            raise InputError(f"{where} is an ablation report (advgen evaluate --ablation), not an evaluation "
                             f"report; its tables are in the ablation.md and ablation.html beside it")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise InputError(f"{where}: unsupported schema_version {version!r}; this advgen reads schema_version "
                             f"{SCHEMA_VERSION} (re-run advgen evaluate to get one)")
        report = build(cls, data, where)
        wrong = _disagreement(data, json.loads(report.to_json()))
        if wrong is not None:
            raise InputError(f"{where}: {wrong} is not what its per-image outcomes give; "
                             f"the report was edited or is inconsistent")
        return report


def load_report(path: str | os.PathLike) -> Report:
    """Read and validate a ``report.json``; missing, unreadable or invalid files become :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"report not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read report {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except ValueError as exc:  # JSONDecodeError, or NaN/Infinity
        raise InputError(f"{path} is not valid JSON: {exc}") from None
    return Report.from_dict(data, where=str(path))


def _disagreement(given: Any, recomputed: Any, path: str = "") -> str | None:
    """The JSON path of the first value in ``given`` that differs from its recomputed twin; None if all agree.

    Keys only one side has are allowed: they can only be derived entries (every field was rebuilt),
    and a writer with a smaller or larger metric registry writes fewer or more of those.
    """
    if isinstance(given, dict) and isinstance(recomputed, dict):
        for k, v in given.items():
            if k in recomputed:
                wrong = _disagreement(v, recomputed[k], f"{path}.{k}" if path else k)
                if wrong is not None:
                    return wrong
        return None
    return None if given == recomputed else path or "the report"


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


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a report")
