"""The Grafana dashboard in docs/ asks only for metrics and labels the library exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bruno_memstore import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "bruno-memstore.json"
_SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",), "gauge": ("",)}


def _exported() -> dict[str, set[str]]:
    """Sample name -> the labels it carries, for every metric of bruno_memstore.metrics."""
    out: dict[str, set[str]] = {}
    for name in metrics.__all__:
        metric = getattr(metrics, name)
        if not hasattr(metric, "_labelnames"):
            continue
        labels = set(metric._labelnames)
        kind = metric._type
        base = metric._name
        for suffix in _SUFFIXES[kind]:
            out[base + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


def _queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in board["panels"] for t in p["targets"]]
    queries += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    return queries


def test_every_query_names_an_exported_metric_and_its_labels() -> None:
    exported = _exported()
    assert {"bruno_memstore_records", "bruno_memstore_storage_bytes"} <= exported.keys()
    seen: set[str] = set()
    for query in _queries():
        names = re.findall(r"bruno_memstore_\w+", query)
        assert names, query
        for name in names:
            assert name in exported, f"{name} is not exported ({query})"
            seen.add(name)
        used = set(re.findall(r"by \(([^)]*)\)", query))
        used_labels = {label.strip() for group in used for label in group.split(",")}
        used_labels |= set(re.findall(r"(\w+)=~?\"", query))
        used_labels |= set(re.findall(r"\{\{(\w+)\}\}", query))
        allowed = set().union(*(exported[n] for n in names))
        assert used_labels <= allowed, f"{used_labels - allowed} not labels of {names}"
    # Every family the library exports has a panel.
    families = {n.removesuffix(s) for n in seen for s in ("_bucket", "_count", "_total") if n}
    for name in ("operation_seconds", "operation_errors", "cache_requests", "storage_bytes"):
        assert any(f"bruno_memstore_{name}" in f for f in families), name


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    board = json.loads(DASHBOARD.read_text())
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels) == 6
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, p["title"]
        assert g["x"] + g["w"] <= 24
        cells |= mine
