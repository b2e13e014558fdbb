"""Alert rules: a condition on one windowed request metric, and loading rules from TOML or JSON.

An `AlertRule` is data: a metric of `MetricsCollector.window(window_s)`
compared with a threshold (`error_rate > 0.05 over 300 s`), with how long a
breach must last, how far back the value must come to resolve, and how often
it may notify. `parse_rules` and `load_rules` read `[[rules]]` tables (TOML)
or a list of objects (JSON); `default_rules` are the ones that ship. The
`AlertManager` in `obs.alerting.manager` evaluates them.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from obs._validate import is_finite_number

__all__ = ["ALERT_METRICS", "ALERT_OPS", "AlertRule", "default_rules", "load_rules", "parse_rules"]

# The WindowStats fields a rule may watch.
ALERT_METRICS = (
    "error_rate",
    "avg_latency_ms",
    "p95_latency_ms",
    "p99_latency_ms",
    "p95_ttft_ms",
    "cost_per_hour",
    "tokens_per_second",
    "requests_per_minute",
)
ALERT_OPS = (">", ">=", "<", "<=")

_RULE_FIELDS = (
    "name", "metric", "op", "threshold", "window_s", "min_requests", "for_s", "cooldown_s", "hysteresis",
)
_REQUIRED_FIELDS = ("name", "metric", "op", "threshold", "window_s")


def _fmt(value: float) -> str:
    return f"{value:.4g}"


@dataclass(frozen=True, slots=True)
class AlertRule:
    """A condition on one windowed metric: `metric op threshold` over the last `window_s` seconds.

    metric: one of ALERT_METRICS (fields of `MetricsCollector.window`).
    op: one of ">", ">=", "<", "<=". threshold: finite, >= 0.
    window_s: the sliding window in seconds, > 0.
    min_requests: the rule does not breach while the window holds fewer
      requests (an int >= 0; 1 by default, so an empty window never fires).
    for_s: seconds the breach must last before firing (>= 0; 0 fires at once).
    cooldown_s: least seconds between two firing notifications (>= 0).
    hysteresis: fraction of the threshold in [0, 1) the value must move back
      past the threshold before a firing rule resolves.
    Invalid values raise ValueError naming the field, the value and what is allowed.
    """

    name: str
    metric: str
    op: str
    threshold: float
    window_s: float
    min_requests: int = 1
    for_s: float = 0.0
    cooldown_s: float = 300.0
    hysteresis: float = 0.1

    def __post_init__(self) -> None:
        """Validate every field (see the class docstring)."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"AlertRule: name must be a non-empty string, got {self.name!r}")
        where = f"AlertRule {self.name!r}"
        if self.metric not in ALERT_METRICS:
            raise ValueError(
                f"{where}: metric must be one of {', '.join(ALERT_METRICS)}; got {self.metric!r}"
            )
        if self.op not in ALERT_OPS:
            raise ValueError(f"{where}: op must be one of {', '.join(ALERT_OPS)}; got {self.op!r}")
        if not is_finite_number(self.threshold) or self.threshold < 0:
            raise ValueError(f"{where}: threshold must be a finite number >= 0, got {self.threshold!r}")
        if not is_finite_number(self.window_s) or self.window_s <= 0:
            raise ValueError(
                f"{where}: window_s must be a finite number of seconds > 0, got {self.window_s!r}"
            )
        min_requests = self.min_requests
        if not isinstance(min_requests, int) or isinstance(min_requests, bool) or min_requests < 0:
            raise ValueError(f"{where}: min_requests must be an integer >= 0, got {self.min_requests!r}")
        if not is_finite_number(self.for_s) or self.for_s < 0:
            raise ValueError(f"{where}: for_s must be a finite number of seconds >= 0, got {self.for_s!r}")
        if not is_finite_number(self.cooldown_s) or self.cooldown_s < 0:
            raise ValueError(
                f"{where}: cooldown_s must be a finite number of seconds >= 0, got {self.cooldown_s!r}"
            )
        if not is_finite_number(self.hysteresis) or not 0 <= self.hysteresis < 1:
            raise ValueError(
                f"{where}: hysteresis must be a fraction of the threshold in [0, 1), got {self.hysteresis!r}"
            )
        # Numbers are stored as floats so equal rules compare and serialize alike.
        for name in ("threshold", "window_s", "for_s", "cooldown_s", "hysteresis"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def clear_threshold(self) -> float:
        """The value a firing rule must get back past to resolve (threshold moved by hysteresis)."""
        factor = 1.0 - self.hysteresis if self.op in (">", ">=") else 1.0 + self.hysteresis
        # Rounded to 12 significant digits so 0.1 * 0.8 is 0.08, not 0.08000000000000002,
        # and a value sitting exactly on the clear point is judged as the user wrote it.
        return float(f"{self.threshold * factor:.12g}")

    @property
    def condition(self) -> str:
        """The rule as a sentence fragment: `error_rate > 0.05 over 300s`."""
        return f"{self.metric} {self.op} {_fmt(self.threshold)} over {_fmt(self.window_s)}s"

    def breached(self, value: float) -> bool:
        """True if `value` meets the condition (`value op threshold`)."""
        op, threshold = self.op, self.threshold
        if op == ">":
            return value > threshold
        if op == ">=":
            return value >= threshold
        if op == "<":
            return value < threshold
        return value <= threshold

    def cleared(self, value: float) -> bool:
        """True if `value` is back past the clear threshold, so a firing rule resolves."""
        clear = self.clear_threshold
        if self.op == ">":
            return value <= clear
        if self.op == ">=":
            return value < clear
        if self.op == "<":
            return value >= clear
        return value > clear

    def to_dict(self) -> dict[str, Any]:
        """A JSON- and TOML-ready dict that `from_dict` reads back."""
        return {name: getattr(self, name) for name in _RULE_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertRule:
        """Build a rule from a mapping; unknown or missing keys raise ValueError naming them."""
        if not isinstance(data, Mapping):
            raise ValueError(f"an alert rule must be a table/object of fields, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_RULE_FIELDS))
        if unknown:
            raise ValueError(
                f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(_RULE_FIELDS)}"
            )
        missing = [name for name in _REQUIRED_FIELDS if name not in data]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(map(repr, missing))}")
        return cls(**dict(data))


def default_rules() -> list[AlertRule]:
    """The rules that ship: error rate above 5% and p95 latency above 5 s, both over 5 minutes.

    The error-rate rule needs at least 10 requests in the window, the latency
    rule at least 5, so a single unlucky request does not page anyone.
    """
    return [
        AlertRule("high_error_rate", "error_rate", ">", 0.05, window_s=300.0, min_requests=10),
        AlertRule("slow_p95_latency", "p95_latency_ms", ">", 5000.0, window_s=300.0, min_requests=5),
    ]


def parse_rules(text: str, fmt: Literal["toml", "json"], source: str = "<string>") -> list[AlertRule]:
    """Parse rules from TOML (`[[rules]]` tables) or JSON (`{"rules": [...]}` or a bare list).

    Errors raise ValueError naming `source`, the rule (index and name) and the problem.
    Rule names must be unique.
    """
    if fmt == "toml":
        try:
            document: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{source}: invalid TOML: {exc}") from None
    elif fmt == "json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: invalid JSON: {exc}") from None
    else:
        raise ValueError(f"parse_rules: fmt must be 'toml' or 'json', got {fmt!r}")
    entries = document if isinstance(document, list) else None
    if isinstance(document, dict):
        extra = sorted(set(document) - {"rules"})
        if extra:
            raise ValueError(
                f"{source}: unknown top-level key(s) {', '.join(map(repr, extra))}; expected 'rules'"
            )
        entries = document.get("rules", [])
    if not isinstance(entries, list):
        raise ValueError(f"{source}: 'rules' must be a list of rule tables/objects")
    rules: list[AlertRule] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        label = f"rule {index + 1}" + (f" ({name!r})" if isinstance(name, str) else "")
        try:
            rule = AlertRule.from_dict(entry)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {label}: {exc}") from None
        if rule.name in seen:
            raise ValueError(f"{source}: {label}: duplicate rule name {rule.name!r}")
        seen.add(rule.name)
        rules.append(rule)
    return rules


def load_rules(path: str | Path) -> list[AlertRule]:
    """Read rules from a `.toml` or `.json` file (see `parse_rules` for the layout).

    The format comes from the suffix; errors raise ValueError naming the file
    and the rule. A missing file raises FileNotFoundError.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ValueError(f"{path}: alert rules must be a .toml or .json file, got suffix {path.suffix!r}")
    text = path.read_text(encoding="utf-8")
    return parse_rules(text, "toml" if suffix == ".toml" else "json", source=str(path))
