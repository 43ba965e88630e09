"""The mixed-precision planner: spends the budget where measured error per bit is highest, never
over budget, and offers the embedding demotion only when it frees bits."""

from __future__ import annotations

import argparse

import pytest

from finllm_edge_convert import mixed_precision as mp

pytestmark = pytest.mark.convert


def _sens(errs: dict[str, tuple[int, float, float, float]]) -> dict:
    return {k: {"n": n, "err": {"q4_0": e4, "q5_0": e5, "q8_0": e8}} for k, (n, e4, e5, e8) in errs.items()}


def _probe(sens: dict, emb_n: int = 0) -> dict:
    p = {k: ("Q4_0", int(4.5 * s["n"]), s["n"]) for k, s in sens.items()}
    if emb_n:
        p[mp.EMBEDDING] = ("Q8_0", int(8.5 * emb_n), emb_n)
    return p


def test_budget_goes_to_the_most_error_per_bit_and_is_never_exceeded():
    sens = _sens({"blk.0.ffn_down.weight": (1024, 100.0, 30.0, 1.0),   # sensitive
                  "blk.0.attn_q.weight": (1024, 10.0, 3.0, 0.1),       # 10x less
                  "blk.1.ffn_up.weight": (1024, 50.0, 15.0, 0.5)})
    probe = _probe(sens)
    base = sum(b for _, b, _ in probe.values())
    plan = mp.plan_upgrades(sens, probe, base + 1024 * 1.0)   # room for exactly one Q4_0 -> Q5_0 step
    assert plan.types == {"blk.0.ffn_down.weight": "q5_0"} and plan.bits <= base + 1024
    plan = mp.plan_upgrades(sens, probe, base + 1024 * 5.0)   # Q8_0 for ffn_down (4 bits) + one Q5_0
    assert plan.types == {"blk.0.ffn_down.weight": "q8_0", "blk.1.ffn_up.weight": "q5_0"}
    assert mp.plan_upgrades(sens, probe, base - 1).types == {}  # already over: nothing bought


def test_types_without_a_grid_are_left_alone():
    sens = _sens({"blk.0.attn_v.weight": (1024, 100.0, 30.0, 1.0)})
    probe = {"blk.0.attn_v.weight": ("Q6_K", int(6.5625 * 1024), 1024)}
    assert mp.plan_upgrades(sens, probe, 10**9).types == {}


def test_embedding_demotion_is_a_second_candidate_that_buys_upgrades():
    sens = _sens({f"blk.{i}.ffn_down.weight": (4096, 100.0, 30.0, 1.0) for i in range(4)})
    probe = _probe(sens, emb_n=8192)
    total = sum(b for _, b, _ in probe.values()) + 32 * 1000     # + some F32 norms
    n_params = sum(n for _, _, n in probe.values()) + 1000
    plans = dict(mp.candidates(sens, probe, total, n_params, total / n_params))
    assert plans["embedding as probed"].types == {}               # no spare bits at the same size
    demoted = plans["embedding at Q5_0"]
    assert demoted.types[mp.EMBEDDING] == "q5_0" and len(demoted.types) > 1
    assert demoted.bits <= sum(b for _, b, _ in probe.values())
    args = demoted.args()
    assert args[args.index("--token-embedding-type") + 1] == "q5_0"
    assert "^blk[.]0[.]ffn_down[.]weight$=q5_0" in args or "^blk[.]0[.]ffn_down[.]weight$=q8_0" in args
    # an embedding already at Q5_0 or below offers no second candidate
    probe[mp.EMBEDDING] = ("Q4_0", int(4.5 * 8192), 8192)
    assert len(mp.candidates(sens, probe, total, n_params, 6.0)) == 1


def test_choose_takes_the_lowest_score():
    plans = [("a", mp.Plan({"x": "q5_0"})), ("b", mp.Plan({"y": "q8_0"}))]
    label, plan, scores = mp.choose(plans, lambda p: 0.2 if "x" in p.types else 0.1)
    assert label == "b" and plan.types == {"y": "q8_0"} and scores == {"a": 0.2, "b": 0.1}


def test_cli_budget_accepts_a_number_or_same():
    from finllm_edge_convert.cli import _budget

    assert _budget("5.35") == 5.35 and _budget("same") == "same"
    for bad in ("five", "0.5", "40"):
        with pytest.raises(argparse.ArgumentTypeError):
            _budget(bad)
