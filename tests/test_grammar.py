"""Constrained decoding in the core: JSON Schema -> grammar conversion, hostile schemas and
grammars (each class a clear GrammarError or bounded work, never a hang or crash), greedy picks
the grammar-valid argmax, and a complete grammar ends the answer."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from finllm_edge.errors import GrammarError, InvalidArgumentError, UnsupportedFeatureError
from finllm_edge.structured import ANY_JSON_OBJECT, constraint_of, json_schema_to_grammar

FIGURE = {"type": "object", "properties": {"revenue": {"type": "number"}, "currency": {"enum": ["USD", "EUR"]}},
          "required": ["revenue", "currency"]}


def refused(schema, *words: str, seconds: float = 5.0) -> str:
    t0 = time.perf_counter()
    with pytest.raises(GrammarError) as info:
        json_schema_to_grammar(schema)
    assert time.perf_counter() - t0 < seconds
    msg = str(info.value)
    for w in words:
        assert w in msg, msg
    return msg


# ---------------------------------------------------------------- conversion (no model)

@pytest.mark.native
def test_schema_converts_to_a_grammar():
    g = json_schema_to_grammar(FIGURE)
    assert "root ::=" in g and '\\"USD\\"' in g
    assert json_schema_to_grammar(json.dumps(FIGURE)) == g


@pytest.mark.native
def test_hostile_schema_invalid_json_and_shape():
    refused('{"type": "object",', "not valid JSON")
    refused("[1, 2]", "must be a JSON object")
    refused({"type": "frobnicate"}, "unrecognized type")


@pytest.mark.native
def test_hostile_schema_deep_nesting():
    deep = '{"type":"array","items":' * 5000 + "{}" + "}" * 5000
    refused(deep, "nests deeper than 32")


@pytest.mark.native
def test_hostile_schema_huge_enum_and_literals():
    refused({"enum": list(range(5000))}, "enum", "5000 values")
    refused({"enum": ["x" * 30000, "y" * 40000]}, "literals exceed")


@pytest.mark.native
@pytest.mark.parametrize("key", ["minItems", "maxItems"])
def test_hostile_schema_enormous_repetition(key):
    refused({"type": "array", "items": {"type": "number"}, key: 1e9}, key, "non-negative integer")
    refused({"type": "array", "items": {"type": "number"}, key: 1000000000}, key, "0..2000")
    refused({"type": "string", "maxLength": 10 ** 30}, "maxLength")
    refused({"type": "array", "minItems": 5, "maxItems": 2}, "minItems > maxItems")


@pytest.mark.native
def test_hostile_schema_numeric_bounds():
    refused({"type": "integer", "minimum": 1e300}, "minimum", "2^53")
    refused({"type": "integer", "maximum": -9223372036854775808}, "maximum")
    refused({"type": "integer", "minimum": 10, "maximum": 1}, "minimum > maximum")
    g = json_schema_to_grammar({"type": "integer", "minimum": -5, "maximum": 120})
    assert "root ::=" in g


@pytest.mark.native
def test_hostile_schema_ref_cycles_and_bad_refs():
    refused({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "cycle")
    refused({"allOf": [{"$ref": "#/$defs/a"}], "$defs": {"a": {"$ref": "#/$defs/a"}}}, "cycle")
    refused({"$ref": "#/$defs/missing"}, "does not resolve")
    refused({"$ref": "https://example.com/schema.json"}, "not a local reference")
    # recursion through content is fine: a tree of nodes
    tree = {"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"},
                                                                 "kids": {"type": "array",
                                                                          "items": {"$ref": "#/$defs/node"}}}}},
            "$ref": "#/$defs/node"}
    assert "root ::=" in json_schema_to_grammar(tree)


@pytest.mark.native
def test_hostile_schema_expansion_and_size():
    s: dict = {"type": "string"}
    for _ in range(12):  # each level copies its subtree once per type: 3^12 builds without the bound
        s = {"type": ["object", "null", "string"], "properties": {"a": s}}
    assert len(json.dumps(s)) < 2000
    refused(s, "expands to more than")
    refused({"type": "object", "properties": {f"p{i}": {"type": "number"} for i in range(300)}}, "300 entries")
    refused({"type": "string", "description": "x" * (300 * 1024)}, "longer than 262144 bytes")
    refused({"type": "string", "pattern": "^" + "a" * 2000 + "$"}, "pattern", "1024")


@pytest.mark.native
def test_response_format_shapes():
    assert constraint_of(response_format={"type": "json_object"}).json_schema == ANY_JSON_OBJECT
    c = constraint_of(response_format={"type": "json_schema", "json_schema": {"name": "f", "schema": FIGURE}})
    assert json.loads(c.json_schema) == FIGURE
    assert not constraint_of(response_format={"type": "text"})
    with pytest.raises(InvalidArgumentError):
        constraint_of(response_format={"type": "xml"})
    with pytest.raises(InvalidArgumentError):
        constraint_of(grammar="root ::= \"a\"", json_schema=FIGURE)
    with pytest.raises(InvalidArgumentError):
        constraint_of(json_schema=42)


def test_onnx_backend_refuses_grammars():
    from finllm_edge.onnx_engine import OnnxEngine

    eng = object.__new__(OnnxEngine)
    with pytest.raises(UnsupportedFeatureError, match="not supported by the ONNX backend"):
        OnnxEngine.generate(eng, "x", json_schema=FIGURE)
    with pytest.raises(UnsupportedFeatureError):
        OnnxEngine.generate(eng, "x", response_format={"type": "json_object"})


# ---------------------------------------------------------------- generation (a model)

@pytest.fixture(scope="module")
def engine():
    from finllm_edge import Engine

    with Engine(n_ctx=1024, n_threads=2) as e:
        yield e


def ask(engine, question: str, **kw):
    return engine.chat([{"role": "user", "content": question}], max_tokens=kw.pop("max_tokens", 96), **kw)


def run(stream):
    for _ in stream:
        pass
    return stream


@pytest.mark.slow
def test_json_schema_answer_parses_and_ends_at_completion(engine):
    s = run(ask(engine, "Acme's revenue was 120 million dollars. Give it as JSON.", json_schema=FIGURE))
    data = json.loads(s.text)
    assert set(data) == {"revenue", "currency"} and data["currency"] in ("USD", "EUR")
    assert s.finish_reason == "stop"
    # ignore_eos cannot run past a complete grammar
    s2 = run(ask(engine, "Acme's revenue was 120 million dollars. Give it as JSON.", json_schema=FIGURE,
                 ignore_eos=True))
    assert s2.text == s.text and s2.finish_reason == "stop"


@pytest.mark.slow
def test_response_format_json_object_and_grammar(engine):
    s = run(ask(engine, "Describe Apple's balance sheet as JSON.", response_format={"type": "json_object"},
                max_tokens=200))
    if s.finish_reason == "stop":
        assert isinstance(json.loads(s.text), dict)
    else:  # cut by max_tokens: still a prefix of a JSON object
        assert s.text.lstrip().startswith("{")
    yn = run(ask(engine, "Is cash an asset? Answer yes or no.", grammar='root ::= "yes" | "no"'))
    assert yn.text in ("yes", "no") and yn.finish_reason == "stop"


@pytest.mark.slow
def test_greedy_picks_the_grammar_valid_argmax(engine):
    """Greedy checks the unconstrained argmax first; the masked path (sampling with top_k=1: the
    grammar masks the whole vocabulary, then the best token is kept) must give the same tokens."""
    q = "List three risks of a bond as JSON with a count."
    schema = {"type": "object", "properties": {"count": {"type": "integer", "minimum": 0, "maximum": 9},
                                               "risks": {"type": "array", "maxItems": 3,
                                                         "items": {"type": "string", "maxLength": 30}}},
              "required": ["count", "risks"]}
    greedy = run(ask(engine, q, json_schema=schema, max_tokens=120))
    masked = run(ask(engine, q, json_schema=schema, max_tokens=120, temperature=1.0, top_k=1, seed=7))
    assert greedy.tokens == masked.tokens
    free = run(ask(engine, q, max_tokens=8))
    assert free.tokens[:1] != greedy.tokens[:1]  # the unconstrained argmax was refused at least once


@pytest.mark.slow
def test_hostile_grammars_are_refused(engine):
    cases = {
        'root ::= "a" (': "grammar",                        # invalid syntax
        'root ::= root "a" | "a"': "left recursion",        # left recursion
        'root ::= undefined-rule': "grammar",               # undefined rule
        'root ::= "a"{1000000}': "grammar",                 # enormous repetition
        "root ::= " + "(" * 5000 + '"a"' + ")" * 5000: "nests groups deeper",
        'start ::= "a"': "root",                           # no root rule
    }
    for g, word in cases.items():
        t0 = time.perf_counter()
        with pytest.raises(GrammarError) as info:
            run(ask(engine, "x", grammar=g, max_tokens=4))
        assert word in str(info.value), (g[:40], str(info.value))
        assert time.perf_counter() - t0 < 10
    with pytest.raises(GrammarError, match="longer than"):
        run(ask(engine, "x", grammar='root ::= "' + "a" * (300 * 1024) + '"'))
    assert run(ask(engine, "Say hi.", max_tokens=4)).finish_reason in ("stop", "length")  # the engine still works


@pytest.mark.slow
def test_ambiguous_grammar_is_bounded(engine):
    """Parse states that double per token (2^n pending "b"/"c" stacks) end the request with a
    GrammarError naming the bound, instead of a hang or running out of memory."""
    g = 'root ::= x\nx ::= "a" x "b" | "a" x "c" | "a"{40}'
    t0 = time.perf_counter()
    with pytest.raises(GrammarError, match="too ambiguous"):
        run(ask(engine, "Write many letters a.", grammar=g, max_tokens=200))
    assert time.perf_counter() - t0 < 180  # wall time on a loaded 2-core host; the bound is CPU time


@pytest.mark.slow
def test_hostile_schema_in_a_subprocess_does_not_crash():
    """A schema that overflowed the converter's recursion before the bounds: still an error, and
    the process survives (run in a child so a crash would show as a signal)."""
    code = (
        "import json\n"
        "from finllm_edge.structured import json_schema_to_grammar\n"
        "from finllm_edge.errors import GrammarError\n"
        "s={'$defs': {'a': {'$ref': '#/$defs/a'}}, 'allOf': [{'$ref': '#/$defs/a'}]}\n"
        "try:\n    json_schema_to_grammar(s)\nexcept GrammarError as e:\n    print('refused', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "refused" in out.stdout, out.stderr[-400:]


@pytest.mark.slow
def test_cli_run_json_schema_and_hostile_grammar(tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(FIGURE))
    cmd = [sys.executable, "-m", "finllm_edge.lab", "run", "-p", "Revenue was 120 million dollars. As JSON:",
           "-n", "96", "-t", "2", "--quiet-profile"]
    out = subprocess.run(cmd + ["--json-schema", str(schema)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-600:]
    assert set(json.loads(out.stdout)) == {"revenue", "currency"}
    bad = subprocess.run(cmd + ["--grammar", 'root ::= root "a" | "a"'], capture_output=True, text=True,
                         timeout=600)
    assert bad.returncode == 2 and "left recursion" in bad.stderr, bad.stderr[-600:]


@pytest.mark.slow
def test_scheduler_requests_are_constrained_like_sessions(engine):
    """Concurrent requests on the scheduler use the same constrained decoding as sessions: each
    answer equals the session's, token for token; a hostile schema is refused at submit."""
    from finllm_edge import Scheduler

    questions = ["Acme's revenue was 120 million dollars. Give it as JSON.",
                 "Globex earned 75 million euros in sales. Give it as JSON.",
                 "Initech's revenue: 9 million dollars. Give it as JSON."]
    solo = [run(ask(engine, q, json_schema=FIGURE)).tokens for q in questions]
    with Scheduler(n_slots=3, n_ctx=1024, n_threads=2) as sched:
        streams = [sched.chat([{"role": "user", "content": q}], max_tokens=96, json_schema=FIGURE) for q in questions]
        together = [run(s) for s in streams]
        assert [s.tokens for s in together] == solo
        assert all(s.finish_reason == "stop" and set(json.loads(s.text)) == {"revenue", "currency"} for s in together)
        with pytest.raises(GrammarError, match="nests deeper"):
            sched.chat([{"role": "user", "content": "x"}], json_schema='{"a":' * 40 + "1" + "}" * 40)
