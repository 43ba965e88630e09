"""200 schema-constrained generations on SmolLM2 Q4_0 and Q4_K_M (100 each, 5 schemas x 20 finance
texts): every answer ends by itself ('stop'), parses as JSON and validates against its schema
(checked by an independent validator, tests/json_schema_check.py). Prints the count."""

from __future__ import annotations

import glob
import json
import os
import subprocess

import pytest

from finllm_edge.paths import cache_dir
from json_schema_check import errors

MONEY = {"type": "object", "properties": {"amount": {"type": "number"}, "currency": {"enum": ["USD", "EUR", "GBP"]}},
         "required": ["amount", "currency"]}
SCHEMAS = {
    "figure": {"type": "object", "properties": {
        "metric": {"enum": ["revenue", "net income", "operating income"]}, "value": {"type": "number"},
        "unit": {"enum": ["thousands", "millions", "billions"]}, "currency": {"enum": ["USD", "EUR", "GBP"]},
        "period": {"type": "string", "maxLength": 12}},
        "required": ["metric", "value", "unit", "currency", "period"]},
    "sentiment": {"type": "object", "properties": {
        "sentiment": {"enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
        "reasons": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"type": "string", "maxLength": 40}}},
        "required": ["sentiment", "confidence", "reasons"]},
    "ticker": {"type": "object", "properties": {
        "ticker": {"type": "string", "pattern": "^[A-Z]{1,5}$"}, "pe_ratio": {"anyOf": [{"type": "number"},
                                                                                        {"type": "null"}]},
        "pays_dividend": {"type": "boolean"}, "sector": {"type": "string", "maxLength": 20}},
        "required": ["ticker", "pe_ratio", "pays_dividend", "sector"]},
    "statement": {"$defs": {"money": MONEY}, "type": "object", "properties": {
        "revenue": {"$ref": "#/$defs/money"}, "net_income": {"$ref": "#/$defs/money"},
        "year": {"type": "integer", "minimum": 1990, "maximum": 2030}},
        "required": ["revenue", "net_income", "year"]},
    "risks": {"type": "array", "minItems": 1, "maxItems": 4, "items": {"type": "string", "maxLength": 30}},
}
QUESTIONS = {
    "figure": "Extract the revenue of this text as JSON.",
    "sentiment": "Classify the sentiment of this news item as JSON.",
    "ticker": "Give the company's ticker, P/E ratio, dividend and sector as JSON.",
    "statement": "Give revenue and net income with currency, and the year, as JSON.",
    "risks": "List the main risks in this text as a JSON array of short strings.",
}
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka", "Cyberdyne", "Soylent"]


def texts() -> list[str]:
    out = []
    for i in range(20):
        c = COMPANIES[i % 10]
        rev, ni, year = 50 + 37 * i, 3 + 2.5 * i, 2015 + i % 10
        cur = ["$", "EUR ", "£"][i % 3]
        mood = "beat expectations" if i % 2 else "missed guidance amid weaker demand"
        out.append(f"{c} Corp (ticker {c[:4].upper()}) reported revenue of {cur}{rev} million for {year} and "
                   f"net income of {cur}{ni:.1f} million; results {mood}. Debt rose to {cur}{2 * rev} million.")
    return out


def model(quant: str):
    from finllm_edge.models import default_model_path

    src = default_model_path()
    p = cache_dir() / "bench-models" / f"{src.name.split('.')[0]}.{quant}.gguf"
    if not p.exists():
        tools = sorted(glob.glob(str(cache_dir() / "llama" / "host-*" / "prefix" / "bin" / "llama-quantize")))
        assert tools, "llama-quantize is not built: run `finllm-edge native build` first"
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        subprocess.run([tools[0], "--allow-requantize", str(src), str(tmp), quant, "2"], check=True,
                       capture_output=True)
        os.replace(tmp, p)
    return p


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["Q4_0", "Q4_K_M"])
def test_100_schema_constrained_generations_parse_and_validate(quant):
    from finllm_edge import Engine

    n_ok, failures = 0, []
    with Engine(model(quant), n_ctx=1024, n_threads=2) as engine:
        for name, schema in SCHEMAS.items():
            for text in texts():
                s = engine.chat([{"role": "user", "content": f"{QUESTIONS[name]}\n\n{text}"}], max_tokens=400,
                                json_schema=schema)
                for _ in s:
                    pass
                try:
                    value = json.loads(s.text)
                    problems = errors(value, schema)
                except ValueError as exc:
                    problems = [f"not JSON: {exc}"]
                if s.finish_reason != "stop":
                    problems.append(f"finish_reason {s.finish_reason}")
                if problems:
                    failures.append((name, s.text[:200], problems[:3]))
                else:
                    n_ok += 1
    print(f"{quant}: {n_ok} of 100 schema-constrained generations parse and validate")
    assert not failures, failures[:5]
    assert n_ok == 100
