"""Shared by the record tests: validate a manifest (or an audit report) against the shipped JSON Schema, and
compare two photo records field by field with file paths set aside."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

import gradcam.audits
from gradcam.pipeline.records import SCHEMA, PhotoRecord


def validate(manifest: dict[str, Any] | Path) -> dict[str, Any]:
    import jsonschema

    data = json.loads(manifest.read_text()) if isinstance(manifest, Path) else manifest
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(data)
    return data


AUDIT_SCHEMA = Path(gradcam.audits.__file__).with_name("audit.schema.json")


def validate_audit(report: dict[str, Any] | Path) -> dict[str, Any]:
    """``audit.json`` (a path, or the parsed report) checked against the audit schema; returns the report."""
    import jsonschema

    data = json.loads(report.read_text()) if isinstance(report, Path) else report
    jsonschema.Draft202012Validator(json.loads(AUDIT_SCHEMA.read_text())).validate(data)
    return data


PATH_FIELDS = {"path", "thumbnail", "all_classes"}


def assert_same_record(mine: dict[str, Any], yours: dict[str, Any], atol: float = 2e-3) -> None:
    """Every field equal (numbers within ``atol``, maps decoded), file paths aside (their kinds and names
    compared)."""
    assert set(mine) - PATH_FIELDS == set(yours) - PATH_FIELDS, (sorted(mine), sorted(yours))
    for key in set(mine) - PATH_FIELDS - {"targets", "predictions"}:
        assert mine[key] == yours[key], (key, mine[key], yours[key])
    assert [(p["index"], p["label"]) for p in mine["predictions"]] == [
        (p["index"], p["label"]) for p in yours["predictions"]
    ]
    for p, q in zip(mine["predictions"], yours["predictions"], strict=True):
        assert set(p) == set(q)
        values = [[v for k, v in sorted(r.items()) if k not in ("index", "label")] for r in (p, q)]
        np.testing.assert_allclose(values[0], values[1], atol=1e-4)
    for s, t in zip(mine["targets"], yours["targets"], strict=True):
        assert (s["index"], s.get("label")) == (t["index"], t.get("label"))
        assert abs(s["score"] - t["score"]) <= 1e-3 * max(1.0, abs(s["score"]))
        assert {k: Path(v).name for k, v in s["files"].items()} == {k: Path(v).name for k, v in t["files"].items()}
        assert (s["map"]["shape"], s["map"]["grid"]) == (t["map"]["shape"], t["map"]["grid"])
    a, b = PhotoRecord.from_json(mine), PhotoRecord.from_json(yours)
    for s, t in zip(a.targets, b.targets, strict=True):
        assert s.map is not None and t.map is not None
        np.testing.assert_allclose(s.map.tensor().numpy(), t.map.tensor().numpy(), atol=atol, rtol=1e-3)
