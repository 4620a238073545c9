"""Metric names in PromQL expressions, and the names WaveFlow documents and exports.

Parsing is deliberately small: strip strings, label matchers, range selectors and grouping
clauses, then every identifier left that is not a function, keyword or Grafana variable is a
metric name. Good enough for our own dashboard and alerts, and it fails loudly (an unknown
"metric") rather than silently when an expression uses a construct it does not know.
"""

from __future__ import annotations

import re
from pathlib import Path

#: PromQL functions and aggregation operators our expressions may use.
FUNCTIONS = frozenset(
    [
        "abs",
        "absent",
        "absent_over_time",
        "avg",
        "avg_over_time",
        "bottomk",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "count",
        "count_over_time",
        "count_values",
        "deriv",
        "delta",
        "exp",
        "floor",
        "group",
        "histogram_quantile",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log2",
        "log10",
        "max",
        "max_over_time",
        "min",
        "min_over_time",
        "predict_linear",
        "quantile",
        "quantile_over_time",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sort",
        "sort_desc",
        "sqrt",
        "stddev",
        "stdvar",
        "sum",
        "sum_over_time",
        "time",
        "timestamp",
        "topk",
        "vector",
        "label_values",
    ]
)
#: PromQL keywords: binary operators, modifiers.
KEYWORDS = frozenset(
    [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
    ]
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_GRAFANA_VAR = re.compile(r"\$\{?\w+\}?")
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_DURATION_OR_NUMBER = re.compile(r"^\d")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    text = _GRAFANA_VAR.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name in KEYWORDS or _DURATION_OR_NUMBER.match(name):
            if call and name not in FUNCTIONS:
                raise ValueError(f"unknown PromQL function {name!r} in {expr!r}")
            continue
        names.add(name)
    return names


def documented_series(architecture_md: Path) -> set[str]:
    """Series names from the metrics table of docs/ARCHITECTURE.md (histograms expanded)."""
    series = set()
    for name, kind in re.findall(
        r"^\|\s*`(waveflow_\w+)`\s*\|\s*(\w+)\s*\|", architecture_md.read_text(), re.M
    ):
        if kind == "histogram":
            series |= {name + suffix for suffix in _HISTOGRAM_SUFFIXES}
        else:
            series.add(name)
    return series


def exposition_series(text: str) -> set[str]:
    """Series names a Prometheus text exposition declares, even families with no samples yet."""
    series = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            if kind == "histogram":
                series |= {name + suffix for suffix in _HISTOGRAM_SUFFIXES}
            elif kind == "counter":
                series.add(name if name.endswith("_total") else name + "_total")
            else:
                series.add(name)
        elif line and not line.startswith("#"):
            series.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return series


_MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")


def label_names(expr: str) -> set[str]:
    """Label names an expression matches on or groups by."""
    text = _STRING.sub('""', expr)
    labels = set()
    for matchers in _MATCHERS.findall(text):
        labels |= set(_MATCHER_LABEL.findall(matchers))
    for clause in re.findall(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text
    ):
        labels |= {label.strip() for label in clause.split(",") if label.strip()}
    return labels


def documented_labels(architecture_md: Path) -> set[str]:
    """Label names from the metrics table of docs/ARCHITECTURE.md, plus histograms' `le`."""
    labels = {"le"}
    for cell in re.findall(
        r"^\|\s*`waveflow_\w+`\s*\|\s*\w+\s*\|([^|]*)\|", architecture_md.read_text(), re.M
    ):
        labels |= set(re.findall(r"[a-z_]+", cell.split("(")[0]))
    return labels
