"""The finance task through the core on real and tiny models, and the --eval-text / --task-set errors of
`convert` (they stop the run in the check stage, before any work)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finllm_edge_convert import task_eval, taskset

TESTS = Path(__file__).resolve().parent


@pytest.mark.slow
@pytest.mark.native
def test_smollm2_answers_through_the_core_greedy_and_repeatably():
    from finllm_edge.models import default_model_path

    ts = taskset.generate()
    ts["passages"] = ts["passages"][:3]
    a = task_eval.answer_all(default_model_path(), ts, threads=2)
    b = task_eval.answer_all(default_model_path(), ts, threads=2)
    assert [x["answer"] for x in a] == [x["answer"] for x in b]          # greedy: the same answers twice
    assert len(a) == 12 and all("\n" not in x["answer"] for x in a)
    assert sum(x["correct"] for x in a) >= 3                               # the model does read the passages
    c = task_eval.per_passage(a, ts)
    assert c["n"].tolist() == [4, 4, 4] and c["correct"].sum() == sum(x["correct"] for x in a)


# ---- convert end to end on a tiny random model ------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from convert_helpers import make_adapter, make_tiny_base, smollm2_tokenizer_dir

    root = tmp_path_factory.mktemp("task-tiny")
    model = make_tiny_base(root / "base", "llama", smollm2_tokenizer_dir())
    make_adapter(model, root / "lora")
    return root


@pytest.mark.convert
@pytest.mark.slow
def test_convert_report_carries_the_task(tiny):
    from finllm_edge_convert.pipeline import ConvertOptions, convert

    res = convert(ConvertOptions(base=tiny / "base", lora=tiny / "lora", out=tiny / "out", quants=["q4_0"],
                                 parity=False, cross_check=False, progress=False, task_passages=3))
    q = json.loads((res.out / "quality.json").read_text())
    t = q["task"]
    assert t["n_questions"] == 12 and t["reference"] == "f16" and "Engine" in t["decoding"]
    rows = {r["name"]: r for r in t["artifacts"]}
    assert list(rows) == ["base (no adapter)", "f16", "q4_0"]
    for r in rows.values():
        assert r["n_questions"] == 12 and r["seconds"] > 0 and r["file_bytes"] > 0
        assert 0 <= r["exact_match"] <= 1 and set(task_eval.FIGURES) <= set(r["ci95"])
    assert set(t["lora_gain"]) >= {"base_exact_match", "merged_exact_match", "difference", "relative", "ci95"}
    answers = json.loads((res.out / "task_answers.json").read_text())
    assert set(answers) == set(rows) and all(len(v) == 12 for v in answers.values())
    assert "## Finance task" in (res.out / "quality.md").read_text()
    assert (res.out / "quality.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((res.out / "manifest.json").read_text())
    assert {"quality.png", "task_answers.json"} <= {Path(a["path"]).name for a in manifest["artifacts"]}
    assert Path(manifest["inputs"]["task"][0]["path"]).name == "finance_tasks.json"
    assert not (res.out / ".work").exists()


def _cli(tiny, tmp_path, capsys, *args):
    from finllm_edge.lab.cli import main

    rc = main(["convert", "--base", str(tiny / "base"), "--lora", str(tiny / "lora"), "--out",
               str(tmp_path / "out"), "--no-progress", *args])
    return rc, capsys.readouterr().err


@pytest.mark.convert
def test_eval_text_too_short_stops_the_run_before_any_work(tiny, tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("Revenue rose 8 percent to 412 million dollars. " * 20)
    rc, err = _cli(tiny, tmp_path, capsys, "--eval-text", str(short))
    assert rc == 2 and "tokens; at least 1024 are needed for n_ctx=512" in err and "--eval-text" in err
    assert not (tmp_path / "out").exists()
    rc, err = _cli(tiny, tmp_path, capsys, "--eval-text", str(short), "--eval-ctx", "8")
    assert rc == 2 and "--eval-ctx 8 is too small" in err


@pytest.mark.convert
def test_empty_eval_text_and_bad_task_set(tiny, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    rc, err = _cli(tiny, tmp_path, capsys, "--eval-text", str(empty))
    assert rc == 2 and "empty.txt" in err
    bad = tmp_path / "tasks.json"
    bad.write_text("[]")
    rc, err = _cli(tiny, tmp_path, capsys, "--task-set", str(bad))
    assert rc == 2 and "not a schema_version 1 task set" in err
    rc, err = _cli(tiny, tmp_path, capsys, "--task-passages", "0")
    assert rc == 2 and "--task-passages 0" in err
    assert not (tmp_path / "out").exists()
