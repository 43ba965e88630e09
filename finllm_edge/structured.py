"""Structured output: the Python side of the core's constrained decoding (GBNF grammars and JSON
Schema, native/src/grammar.cpp).

    engine.complete(prompt, json_schema={"type": "object", "properties": {...}, "required": [...]})
    engine.chat(messages, response_format={"type": "json_schema",
                                           "json_schema": {"name": "figures", "schema": {...}}})
    engine.chat(messages, response_format={"type": "json_object"})   # any JSON object
    engine.generate(prompt, grammar='root ::= "yes" | "no"')

This module only translates arguments (OpenAI's `response_format` shape, a dict schema to its JSON
text) and error types: the conversion of a schema to a grammar, every bound on untrusted input,
and the decoding rule are the core's, the same for Python, JNI and fe-bench.
"""

from __future__ import annotations

import ctypes as C
import json
from dataclasses import dataclass
from typing import Any, Mapping

from . import _native
from .errors import GrammarError, InvalidArgumentError

__all__ = ["Constraint", "constraint_of", "json_schema_to_grammar", "ANY_JSON_OBJECT"]

# OpenAI's {"type": "json_object"}: any JSON object.
ANY_JSON_OBJECT = '{"type": "object"}'


@dataclass(frozen=True)
class Constraint:
    """What fe_sampling_params.grammar / .json_schema receive (at most one is set)."""

    grammar: str | None = None
    json_schema: str | None = None

    def __bool__(self) -> bool:
        return self.grammar is not None or self.json_schema is not None

    def apply(self, sampling: _native.SamplingParams) -> list[bytes]:
        """Sets the C fields; returns the buffers to keep alive until the request has started."""
        keep = []
        if self.grammar is not None:
            keep.append(self.grammar.encode("utf-8"))
            sampling.grammar = keep[-1]
        if self.json_schema is not None:
            keep.append(self.json_schema.encode("utf-8"))
            sampling.json_schema = keep[-1]
        return keep


def _schema_text(schema: Any, what: str) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, Mapping):
        try:
            return json.dumps(schema, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise GrammarError(f"{what} cannot be written as JSON: {exc}") from None
    raise InvalidArgumentError(f"{what} must be a dict or a JSON string, got {type(schema).__name__}")


def constraint_of(grammar: str | None = None, json_schema: Any = None,
                  response_format: Mapping[str, Any] | None = None) -> Constraint:
    """The one constraint of a request from the three ways of asking for it (at most one)."""
    given = [name for name, v in (("grammar", grammar), ("json_schema", json_schema),
                                  ("response_format", response_format)) if v is not None]
    if len(given) > 1:
        raise InvalidArgumentError(f"give at most one of grammar, json_schema and response_format (got {given})")
    if grammar is not None:
        if not isinstance(grammar, str):
            raise InvalidArgumentError(f"grammar must be a GBNF string, got {type(grammar).__name__}")
        return Constraint(grammar=grammar)
    if json_schema is not None:
        return Constraint(json_schema=_schema_text(json_schema, "json_schema"))
    if response_format is None:
        return Constraint()
    if not isinstance(response_format, Mapping) or not isinstance(response_format.get("type"), str):
        raise InvalidArgumentError("response_format must be a dict with a 'type': 'text', 'json_object' or "
                                   "'json_schema' (OpenAI's shape)")
    kind = response_format["type"]
    if kind == "text":
        return Constraint()
    if kind == "json_object":
        schema = response_format.get("schema")  # llama-cpp-python's extension
        return Constraint(json_schema=_schema_text(schema, "response_format['schema']") if schema is not None
                          else ANY_JSON_OBJECT)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping):
            raise InvalidArgumentError("response_format {'type': 'json_schema'} needs 'json_schema': "
                                       "{'name': ..., 'schema': {...}}")
        schema = spec["schema"] if "schema" in spec else spec
        return Constraint(json_schema=_schema_text(schema, "response_format['json_schema']['schema']"))
    raise InvalidArgumentError(f"response_format type {kind!r} is not one of 'text', 'json_object', 'json_schema'")


def is_grammar_message(message: str) -> bool:
    """The core starts every grammar/schema refusal with the argument's name."""
    return message.startswith(("grammar", "json_schema")) or ": grammar" in message or ": json_schema" in message


def as_grammar_error(exc: Exception) -> Exception:
    """An InvalidArgumentError about a grammar or schema, as a GrammarError; others unchanged."""
    if isinstance(exc, InvalidArgumentError) and not isinstance(exc, GrammarError) and is_grammar_message(str(exc)):
        return GrammarError(str(exc))
    return exc


def json_schema_to_grammar(schema: Any) -> str:
    """The GBNF grammar the core makes of a JSON Schema (dict or JSON text): what a request with
    json_schema= decodes with. GrammarError when the schema is invalid, unsupported or past a bound."""
    L = _native.lib()
    data = _schema_text(schema, "json_schema").encode("utf-8")
    try:
        raw = _native.read_sized(lambda b, sz, out: L.fe_json_schema_to_grammar(data, b, sz, out),
                                 "json_schema_to_grammar", 4096)
    except InvalidArgumentError as exc:
        raise GrammarError(str(exc)) from None
    return raw.decode("utf-8")


def check(model_handle: C.c_void_p, constraint: Constraint) -> None:
    """Check a constraint against a loaded model without generating (GrammarError on refusal)."""
    L = _native.lib()
    g = constraint.grammar.encode("utf-8") if constraint.grammar is not None else None
    s = constraint.json_schema.encode("utf-8") if constraint.json_schema is not None else None
    st = L.fe_grammar_check(model_handle, g, s)
    if st != _native.FE_OK:
        raise GrammarError(L.error(st).args[0])
