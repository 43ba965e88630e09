"""finllm_edge.lab.llama_bench: the one reader of llama-bench's JSON, against a stand-in that prints
what llama-bench -o json prints (and what it must not)."""

from __future__ import annotations

import json
import stat

import pytest

from finllm_edge.lab import llama_bench

PP = {"n_prompt": 64, "n_gen": 0, "samples_ts": [1000.0, 1100.0], "samples_ns": [64000000, 58181818]}
TG = {"n_prompt": 0, "n_gen": 32, "samples_ts": [200.0, 210.5], "samples_ns": [160000000, 152019002]}


def fake(tmp_path, out: str):
    exe = tmp_path / "llama-bench"
    (tmp_path / "out.txt").write_text(out)
    exe.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'args.txt'}\ncat {tmp_path / 'out.txt'}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def test_rates_and_rows(tmp_path):
    exe = fake(tmp_path, json.dumps([PP, TG]))
    assert llama_bench.rates(exe, tmp_path / "m.gguf", 2, 3, 64, 32, "-fa", "1") == {
        "pp": [1000.0, 1100.0], "tg": [200.0, 210.5]}
    args = (tmp_path / "args.txt").read_text().split()
    assert args == ["-m", str(tmp_path / "m.gguf"), "-t", "2", "-r", "3", "-o", "json", "-p", "64", "-n", "32",
                    "-fa", "1"]
    assert llama_bench.one_row(fake(tmp_path, json.dumps([TG])), tmp_path / "m", 1, 1)["samples_ns"][0] == 160000000


@pytest.mark.parametrize("out", [json.dumps([PP, TG]), json.dumps([])])
def test_one_row_wants_exactly_one(tmp_path, out):
    with pytest.raises(RuntimeError, match="results"):
        llama_bench.one_row(fake(tmp_path, out), tmp_path / "m", 1, 1, "-p", "64")


@pytest.mark.parametrize("out", ['{"samples_ts": [1]}', '[{"n_gen": 0}]', "[1, 2]"])
def test_output_without_result_rows_is_an_error(tmp_path, out):
    with pytest.raises(RuntimeError, match="no result rows"):
        llama_bench.rows(fake(tmp_path, out), tmp_path / "m", 1, 1)
