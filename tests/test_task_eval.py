"""The finance task set and its scoring (convert/taskset.py, task_eval.py, quality_plot.py): the set is
deterministic and its gold answers are in the passages; the parser and the bootstrap intervals are
right on known cases; the report carries the fields. No model here (fast lane); the runs through the
core are in test_task_eval_models.py."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import numpy as np
import pytest

from finllm_edge_convert import task_eval, taskset
from finllm_edge_convert.errors import TaskSetError
from finllm_edge_convert.quality_plot import plot, task_markdown

# ---- the task set ----------------------------------------------------------------------------

def test_shipped_set_is_the_generators_output_byte_for_byte():
    assert taskset.SHIPPED.read_bytes() == taskset.dumps(taskset.generate()).encode("utf-8")


def test_same_seed_same_bytes_other_seed_other_set():
    a = taskset.dumps(taskset.generate(5, 12, 3))
    assert a == taskset.dumps(taskset.generate(5, 12, 3))
    b = taskset.generate(6, 12, 3)
    assert a != taskset.dumps(b)
    qa = [q["question"] + q["answer"] for p in json.loads(a)["passages"] for q in p["questions"]]
    qb = [q["question"] + q["answer"] for p in b["passages"] for q in p["questions"]]
    assert qa != qb


def test_cli_writes_the_set(tmp_path):
    out = tmp_path / "t.json"
    assert taskset.main(["--seed", "3", "--passages", "4", "--questions", "2", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == taskset.dumps(taskset.generate(3, 4, 2))


def test_default_set_size_and_mix():
    ts = taskset.generate()
    assert ts["n_passages"] == 75 and ts["n_questions"] == 300
    kinds = [q["kind"] for p in ts["passages"] for q in p["questions"]]
    assert kinds.count("number") > 150 and kinds.count("span") > 50
    assert {p["type"] for p in ts["passages"]} == {"results", "credit", "news"}
    scored = {p["text"] for p in ts["passages"]}
    assert not scored & {s["text"] for s in ts["shots"]}          # the few-shot examples are never scored


def test_gold_answers_are_in_their_passage():
    ts = taskset.generate()
    for p in ts["passages"] + ts["shots"]:
        nums = task_eval.numbers_in(p["text"])
        for q in p["questions"]:
            if q["kind"] == "number":
                assert task_eval.parse_number(q["answer"]) in nums, (p["id"], q)
            else:
                assert q["answer"].lower() in p["text"].lower(), (p["id"], q)


def test_stated_ratios_agree_with_the_stated_figures():
    """Leverage, coverage and growth in the passages are what their own figures give (to the printed digit)."""
    tenth = Decimal("0.051")
    checked = 0
    for p in taskset.generate()["passages"]:
        n = [Decimal(x.replace(",", "")) for x in re.findall(r"\d[\d,]*(?:\.\d+)?", p["text"])]
        if p["type"] == "credit":      # fiscal year, EBITDA, net debt, leverage, interest, coverage, ...
            _, ebitda, net_debt, lev, interest, cov = n[:6]
            assert abs(net_debt / ebitda - lev) <= tenth and abs(ebitda / interest - cov) <= tenth, p["text"]
            checked += 1
        elif p["type"] == "results" and "unchanged" not in p["text"]:
            _, g, rev, prev = n[:4]    # fiscal year, growth, revenue, revenue a year earlier
            assert abs(abs(rev - prev) / prev * 100 - g) <= tenth, p["text"]
            checked += 1
    assert checked > 30


# ---- parsing and scoring ---------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [
    ("412", "412"), (" 1,250 million dollars", "1250"), ("8.4 percent", "8.4"), ("8.4%.", "8.4"),
    ("-3.5", "-3.5"), ("about 0.71 euros per share", "0.71"), ("no figure", None), ("Q3", None),
    ("2,115.5", "2115.5"), ("12.0", "12"),
])
def test_parse_number(text, value):
    got = task_eval.parse_number(text)
    assert (got is None and value is None) or got == Decimal(value)


def test_score_number_and_span():
    p = {"text": "Revenue rose 8.4 percent to 1,250 million euros. EPS were 1.12 euros, from 0.94 euros."}
    q = {"kind": "number", "answer": "1,250", "aliases": []}
    assert task_eval.score(p, q, " 1250 million")["correct"]
    s = task_eval.score(p, q, "0.94")
    assert not s["correct"] and s["equal_gold"] is False and s["in_source"] is True   # a distractor from the text
    s = task_eval.score(p, q, "1,300")
    assert not s["correct"] and s["in_source"] is False                                   # made up
    s = task_eval.score(p, q, "revenue")
    assert not s["correct"] and s["number"] is None and s["equal_gold"] is None
    span = {"kind": "span", "answer": "third quarter", "aliases": ["q3", "third"]}
    assert task_eval.score(p, span, " The third quarter.")["correct"]
    assert task_eval.score(p, span, "Q3")["correct"]
    assert not task_eval.score(p, span, "third quarter of fiscal 2020 and more")["correct"]


# ---- bootstrap intervals ---------------------------------------------------------------------

def test_interval_two_units_exact_distribution():
    """Two passages, one all right, one all wrong: a resample of 2 has mean 0, 1/2 or 1 with probabilities
    1/4, 1/2, 1/4, so the 2.5th and 97.5th percentiles are 0 and 1."""
    idx = task_eval.resample_index(2)
    assert task_eval.ratio_interval([4, 0], [4, 4], idx) == [0.0, 1.0]
    means = np.asarray([4, 0], float)[idx].sum(1) / 8
    assert abs((means == 0.5).mean() - 0.5) < 0.04 and abs((means == 0).mean() - 0.25) < 0.04


def test_interval_matches_the_normal_approximation_on_independent_items():
    """400 independent items with 200 right: the 95% interval is 0.5 +- 1.96 * sqrt(0.25 / 400) = +- 0.049."""
    num = np.array([1] * 200 + [0] * 200)
    den = np.ones(400)
    lo, hi = task_eval.ratio_interval(num, den, task_eval.resample_index(400))
    assert abs(lo - 0.451) < 0.01 and abs(hi - 0.549) < 0.01


def test_intervals_are_deterministic_and_paired():
    rng = np.random.default_rng(3)
    n = rng.integers(3, 6, 40).astype(float)
    c = {k: np.zeros(40) for k in task_eval.COUNTS}
    c["n"], c["correct"] = n, np.minimum(n, rng.integers(0, 5, 40)).astype(float)
    idx1, idx2 = task_eval.resample_index(40), task_eval.resample_index(40)
    assert (idx1 == idx2).all()
    a = task_eval.summarize("x", "x.gguf", c, idx1, c)
    b = task_eval.summarize("x", "x.gguf", c, idx2, c)
    assert a.ci95 == b.ci95
    assert a.accuracy_kept == 1.0 and a.ci95["accuracy_kept"] == [1.0, 1.0]   # paired: the same model kept 100%
    assert task_eval.summarize("x", "x.gguf", c, task_eval.resample_index(40, seed=1), c).ci95 != a.ci95


def test_accuracy_kept_and_lora_gain_on_a_known_case():
    ref = {k: np.zeros(4) for k in task_eval.COUNTS}
    ref["n"], ref["correct"] = np.full(4, 5.0), np.array([5.0, 4, 4, 3])       # 16/20 = 0.8
    art = dict(ref, correct=np.array([4.0, 4, 3, 3]))                           # 14/20 = 0.7
    idx = task_eval.resample_index(4)
    kept, ci = task_eval.paired_kept(art, ref, idx)
    assert kept == pytest.approx(0.875) and ci[0] <= 0.875 <= ci[1] and ci[1] <= 1.0
    g = task_eval.lora_gain(ref, art, idx)
    assert g["difference"] == pytest.approx(0.1) and g["relative"] == pytest.approx(0.8 / 0.7 - 1)
    assert g["ci95"]["difference"][0] >= 0    # the merged model is never worse on any passage


# ---- the task file is untrusted --------------------------------------------------------------

def test_load_taskset_errors(tmp_path):
    with pytest.raises(TaskSetError, match="does not exist"):
        task_eval.load_taskset(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TaskSetError, match="not UTF-8 JSON"):
        task_eval.load_taskset(bad)
    bad.write_text(json.dumps({"schema_version": 1, "shots": [], "passages": []}))
    with pytest.raises(TaskSetError, match="shots"):
        task_eval.load_taskset(bad)
    ts = taskset.generate(1, 2, 2)
    ts["passages"][0]["questions"][0].update(kind="number", answer="lots")
    bad.write_text(json.dumps(ts))
    with pytest.raises(TaskSetError, match="not a number"):
        task_eval.load_taskset(bad)
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(task_eval.MAX_TASKSET_BYTES + 1)
    with pytest.raises(TaskSetError, match="at most"):
        task_eval.load_taskset(big)
    assert task_eval.load_taskset(taskset.SHIPPED)["n_questions"] == 300


# ---- the report --------------------------------------------------------------------------------

def fake_task():
    idx = task_eval.resample_index(3)
    mk = lambda correct: {"n": np.full(3, 4.0), "correct": np.array(correct, float), "n_number": np.full(3, 3.0),  # noqa: E731
                          "answered_number": np.full(3, 3.0), "equal_gold": np.array(correct, float) * 0.75,
                          "in_source": np.full(3, 3.0)}
    ref, q4, base = mk([4, 3, 2]), mk([3, 3, 2]), mk([2, 1, 1])
    rows = []
    for name, c, size in (("base (no adapter)", base, 90 << 20), ("f16", ref, 260 << 20), ("q4_0", q4, 86 << 20)):
        s = task_eval.summarize(name, f"{name}.gguf", c, idx, ref)
        s.file_bytes, s.seconds = size, 1.0
        rows.append(task_eval.as_dict(s))
    return {"task_set": {"generator": "finllm_edge_convert.taskset", "seed": 16}, "n_questions": 12,
            "n_passages": 3, "reference": "f16", "decoding": "greedy", "intervals": "bootstrap", "artifacts": rows,
            "notes": ["onnx-int4: not scored"], "lora_gain": task_eval.lora_gain(ref, base, idx)}


def test_report_carries_the_fields(tmp_path):
    task = fake_task()
    r = {a["name"]: a for a in task["artifacts"]}
    for name in r:
        for f in ("exact_match", "numeric_equal_gold", "numeric_in_source", "number_answered", "accuracy_kept"):
            assert r[name][f] is not None and len(r[name]["ci95"][f]) == 2, (name, f)
    assert r["q4_0"]["accuracy_kept"] == pytest.approx(8 / 9) and r["f16"]["accuracy_kept"] == 1.0
    md = task_markdown(task)
    for text in ("| q4_0 | 86.0 | 66.7% [", "accuracy kept", "numeric in source", "What the LoRA adds",
                 "+27%", "onnx-int4: not scored"):
        assert text in md, text
    json.dumps(task)                                   # JSON-ready as it is
    quality_rows = [{"name": "f16", "file_bytes": 260 << 20, "top1_agreement": 1.0, "ci95": {}},
                    {"name": "q4_0", "file_bytes": 86 << 20, "top1_agreement": 0.8,
                     "ci95": {"top1_agreement": [0.78, 0.82]}}]
    png = tmp_path / "quality.png"
    plot(quality_rows, task, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_evaluate_scores_cached_answers_without_a_model():
    ts = taskset.generate(2, 6, 3)
    qs = [(p, q) for p in ts["passages"] for q in p["questions"]]
    gold = [{"id": q["id"], "answer": q["answer"]} for _p, q in qs]
    half = [dict(g, answer="no idea") if i % 2 else g for i, g in enumerate(gold)]
    arts = {"f16": {"path": "model-f16.gguf", "file_bytes": 2}, "q4_0": {"path": "model-q4_0.gguf", "file_bytes": 1},
            "onnx-int4": {"path": "model.onnx", "format": "onnx"}}
    out = task_eval.evaluate(arts, "f16", ts, base={"path": "base.gguf"},
                             cached={"f16": (gold, 1.0), "q4_0": (half, 2.0), "base (no adapter)": (half, 3.0)})
    rows = {r["name"]: r for r in out["artifacts"]}
    assert rows["f16"]["exact_match"] == 1.0 and rows["f16"]["numeric_equal_gold"] == 1.0
    assert rows["q4_0"]["exact_match"] == pytest.approx(9 / 18) and rows["q4_0"]["accuracy_kept"] == pytest.approx(0.5)
    assert rows["q4_0"]["numeric_in_source"] == 1.0 and rows["q4_0"]["seconds"] == 2.0
    assert out["lora_gain"]["difference"] == pytest.approx(0.5) and out["lora_gain"]["relative"] == pytest.approx(1.0)
    assert "onnx-int4: not scored" in out["notes"][0] and "onnx-int4" not in rows
    with pytest.raises(TaskSetError, match="do not match"):
        task_eval.evaluate(arts, "f16", ts, cached={"f16": (gold[:-1], 1.0), "q4_0": (half, 1.0)})
