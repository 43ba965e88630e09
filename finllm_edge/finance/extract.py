"""finance.extract: typed figures from a statement or news item, by schema-constrained generation
on the core, then the deterministic checks of finance.checks.

    from finllm_edge import Engine
    from finllm_edge.finance import extract

    with Engine() as engine:
        result = extract(engine, "Acme's revenue rose to $120.0 million in 2024 from $100.0 million ...")
        for f in result.figures:
            print(f.name, f.value, f.unit, f.currency, f.period, f.span, f.derivation)
        for w in result.warnings:
            print("WARNING", w.code, w.message)

The model only fills the JSON the schema allows (the core's grammar sampler guarantees it
parses); whether the numbers are right is decided by the checks, never by the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import InvalidArgumentError
from .checks import CheckReport, CheckWarning, check_figures
from .figures import UNITS, Figure

__all__ = ["FIGURES_SCHEMA", "Extraction", "extract", "figures_from_json", "extraction_messages"]

# The default schema: a list of figures, each a value with unit, currency, period and a quote.
FIGURES_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "figures": {
            "type": "array",
            "minItems": 1,
            "maxItems": 12,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 48},
                    "value": {"type": "number"},
                    "unit": {"enum": list(UNITS)},
                    "currency": {"anyOf": [{"type": "string", "pattern": "^[A-Z]{3}$"}, {"type": "null"}]},
                    "period": {"anyOf": [{"type": "string", "maxLength": 24}, {"type": "null"}]},
                    "source": {"type": "string", "maxLength": 160},
                },
                "required": ["name", "value", "unit", "currency", "period", "source"],
            },
        }
    },
    "required": ["figures"],
}

SYSTEM_PROMPT = (
    "You extract financial figures from the user's text as JSON. For every figure give: name (e.g. "
    "revenue, net income, net margin), value (a number exactly as the text states it), unit (units, thousands, "
    "millions, billions, percent, ratio or x), currency (ISO code such as USD, or null), period (e.g. FY2024, "
    "Q3 2024, or null) and source (the words of the text that state it, copied exactly)."
)


@dataclass
class Extraction:
    """Figures with the checks' verdict. `raw` is the JSON the model produced."""

    figures: list[Figure]
    warnings: list[CheckWarning]
    derived: list[Figure]
    raw: str
    finish_reason: str | None = None
    profile: dict | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return not self.warnings

    def as_dict(self) -> dict:
        return {"figures": [f.as_dict() for f in self.figures],
                "warnings": [{"code": w.code, "message": w.message, "figure": w.figure} for w in self.warnings],
                "derived": [f.as_dict() for f in self.derived]}


def extraction_messages(text: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}]


def _num(v: Any) -> float | Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    return v


def figures_from_json(data: Any) -> list[Figure]:
    """Figures from the model's JSON ({"figures": [...]} or a bare list); fields by name, missing
    ones left empty (the checks then say what is wrong)."""
    items = data.get("figures") if isinstance(data, Mapping) else data
    if not isinstance(items, list):
        raise InvalidArgumentError("the extraction JSON has no 'figures' list")
    out = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        out.append(Figure(name=str(item.get("name") or ""), value=_num(item.get("value")),
                          unit=str(item.get("unit") or "units"), currency=item.get("currency") or None,
                          period=item.get("period") or None, source=item.get("source") or None))
    return out


def extract(engine: Any, text: str, schema: Mapping[str, Any] | None = None, *, max_tokens: int = 768,
            **generate_kwargs: Any) -> Extraction:
    """Figures of `text` (a statement or a news item) as typed `Figure`s, checked against `text`.

    `schema` (default FIGURES_SCHEMA) constrains the model's JSON; a custom one must still produce
    {"figures": [{"name", "value", "unit", "currency", "period", "source"}, ...]} (fields it leaves
    out are empty). Greedy unless sampling options are passed. The answer parses by construction
    (the core's grammar); a `finish_reason` of 'length' means max_tokens cut it, which is an
    InvalidArgumentError here: raise max_tokens or shorten the text."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgumentError("extract: text must be a non-empty string")
    stream = engine.chat(extraction_messages(text), max_tokens=max_tokens,
                         json_schema=dict(schema) if schema is not None else FIGURES_SCHEMA, **generate_kwargs)
    try:
        for _ in stream:
            pass
    finally:
        stream.close()
    if stream.finish_reason != "stop":
        raise InvalidArgumentError(f"extract: the answer was cut short ({stream.finish_reason}) after "
                                   f"{len(stream.tokens)} tokens: raise max_tokens (now {max_tokens})")
    data = json.loads(stream.text)
    figures = figures_from_json(data)
    report: CheckReport = check_figures(figures, text)
    return Extraction(report.figures, report.warnings, report.derived, stream.text, stream.finish_reason,
                      stream.profile)
