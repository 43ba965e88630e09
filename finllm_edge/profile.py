"""LatencyProfile: one JSON schema for the Python runtime, fe-bench on x86, under qemu and on phones.

The schema lives in schemas/latency_profile.schema.json; `validate_profile` checks a dict
against it (the subset of JSON Schema the file uses: type, const, required, properties,
patternProperties, additionalProperties (false or a schema), items, and $ref to "#/$defs/..."),
so every writer (libfinllm_edge's fe_profile_json, the adb device bench) is tested against the
same file. A keyword outside that subset is an error, never silently ignored.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from importlib import resources
from typing import Any

SCHEMA_VERSION = 1

_JSON_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
}


class ProfileSchemaError(ValueError):
    pass


@lru_cache(maxsize=1)
def schema() -> dict:
    text = resources.files("finllm_edge").joinpath("schemas/latency_profile.schema.json").read_text()
    return json.loads(text)


_KNOWN = {"$schema", "$defs", "$ref", "title", "description", "type", "const", "required", "properties",
          "patternProperties", "additionalProperties", "items"}


def _resolve(ref: str) -> dict:
    if not ref.startswith("#/$defs/"):
        raise ProfileSchemaError(f"schema: unsupported $ref {ref!r} (only '#/$defs/<name>')")
    name = ref[len("#/$defs/"):]
    defs = schema().get("$defs", {})
    if name not in defs:
        raise ProfileSchemaError(f"schema: $ref to unknown definition {name!r}")
    return defs[name]


def _check(value: Any, sch: dict, where: str) -> None:
    unknown = set(sch) - _KNOWN
    if unknown:
        raise ProfileSchemaError(f"schema at {where}: unsupported keywords {sorted(unknown)}")
    if "$ref" in sch:
        _check(value, _resolve(sch["$ref"]), where)
    types = sch.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        ok = False
        for name in names:
            py = _JSON_TYPES[name]
            if isinstance(value, bool) and name in ("integer", "number"):
                continue
            if isinstance(value, py):
                ok = True
                break
        if not ok:
            raise ProfileSchemaError(f"{where}: expected {types}, got {type(value).__name__} ({value!r:.60})")
        if isinstance(value, float) and not math.isfinite(value):
            raise ProfileSchemaError(f"{where}: not a finite number: {value}")
    if "const" in sch and value != sch["const"]:
        raise ProfileSchemaError(f"{where}: must be {sch['const']!r}, got {value!r}")
    if isinstance(value, dict):
        missing = [k for k in sch.get("required", []) if k not in value]
        if missing:
            raise ProfileSchemaError(f"{where}: missing fields {missing}")
        props = sch.get("properties", {})
        patterns = [(re.compile(p), sub) for p, sub in sch.get("patternProperties", {}).items()]
        extra_rule = sch.get("additionalProperties", True)
        extra = []
        for key in sorted(value):
            matched = False
            if key in props:
                matched = True
                _check(value[key], props[key], f"{where}.{key}")
            for rx, sub in patterns:
                if rx.search(key):
                    matched = True
                    _check(value[key], sub, f"{where}.{key}")
            if matched:
                continue
            if extra_rule is False:
                extra.append(key)
            elif isinstance(extra_rule, dict):
                _check(value[key], extra_rule, f"{where}.{key}")
        if extra:
            raise ProfileSchemaError(f"{where}: unknown fields {extra}")
    if isinstance(value, list) and "items" in sch:
        for i, item in enumerate(value):
            _check(item, sch["items"], f"{where}[{i}]")


def validate_profile(profile: dict) -> dict:
    """Raise ProfileSchemaError naming the first offending field; return the profile."""
    _check(profile, schema(), "profile")
    return profile


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]; 0.0 for no values."""
    if not values:
        return 0.0
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def load_profiles(path) -> list[dict]:
    """Read a profile file: one profile object, a list of them, or {"profiles": [...]}."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, dict) and "profiles" in data:
        data = data["profiles"]
    items = data if isinstance(data, list) else [data]
    return [validate_profile(p) for p in items]
