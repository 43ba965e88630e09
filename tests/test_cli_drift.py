"""`finllm-edge drift ref|report|export` (issue 17): a reference from text, a device state read back
in words with a PNG, the opt-in sampled prompts exported as text, and bad state files refused."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from finllm_edge import Engine
from finllm_edge.lab import drift_corpora
from finllm_edge.lab.cli import main
from finllm_edge.models import default_model_path

pytestmark = pytest.mark.native


@pytest.fixture(scope="module")
def states(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-drift")
    (d / "tuning.txt").write_text(drift_corpora.text("finance", 300, seed=1))
    model = str(default_model_path())
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["drift", "ref", "--model", model, "--text", str(d / "tuning.txt"), "-o",
                     str(d / "ref.fedrift"), "--window", "128", "--windows", "2000"]) == 0
    with Engine(model, n_ctx=512, n_threads=2) as e:
        mon = e.enable_drift(d / "ref.fedrift")
        for q in drift_corpora.requests("finance", 6, seed=4):
            "".join(e.generate(q, max_tokens=1))
        (d / "counts.json").write_text(mon.state_json())
        mon.set_sampling(16, 1)
        for q in drift_corpora.requests("spanish", 12, seed=4):
            "".join(e.generate(q, max_tokens=1))
        (d / "sampled.json").write_text(mon.state_json())
    return d, model, buf.getvalue()


def test_ref_report_and_png(states, capsys):
    d, model, out = states
    assert "ref.fedrift" in out and "false-alarm rates 0.05 / 0.01" in out
    assert main(["drift", "report", str(d / "sampled.json"), "--model", model, "-o", str(d / "report")]) == 0
    text = capsys.readouterr().out
    assert "state: DRIFT" in text and "KL(window || tuning text)" in text
    assert "asked about more than in the tuning text" in text and "new vocabulary" in text
    assert (d / "report" / "drift_kl.png").read_bytes()[:4] == b"\x89PNG"
    assert "state: DRIFT" in (d / "report" / "report.md").read_text()


def test_export_needs_the_opt_in(states, capsys):
    d, model, _ = states
    assert "samples" not in json.loads((d / "counts.json").read_text())
    assert main(["drift", "export", str(d / "counts.json"), "--model", model, "-o", str(d / "x.txt")]) == 2
    assert "counts only" in capsys.readouterr().err
    assert main(["drift", "export", str(d / "sampled.json"), "--model", model, "-o", str(d / "new.txt")]) == 0
    exported = (d / "new.txt").read_text()
    assert exported.count("\n\n") == 11 and "¿" in exported  # the 12 Spanish prompts, as text


@pytest.mark.parametrize("content, needle", [
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "not a finllm-edge drift state"),
    (json.dumps({"schema": "finllm-edge/drift-state", "version": 9}).encode(), "version"),
    (json.dumps({"schema": "finllm-edge/drift-state", "version": 1}).encode(), "lacks"),
])
def test_bad_state_files(tmp_path, capsys, content, needle):
    f = tmp_path / "state.json"
    f.write_bytes(content)
    assert main(["drift", "report", str(f)]) == 2
    assert needle in capsys.readouterr().err


def test_inconsistent_state_is_refused(states, tmp_path, capsys):
    d, _, _ = states
    s = json.loads((d / "counts.json").read_text())
    s["window_counts"] = s["window_counts"][:-1]
    (tmp_path / "s.json").write_text(json.dumps(s))
    assert main(["drift", "report", str(tmp_path / "s.json")]) == 2
    assert "inconsistent" in capsys.readouterr().err


def test_help_teaches(capsys):
    with pytest.raises(SystemExit):
        main(["drift", "--help"])
    out = capsys.readouterr().out
    assert "re-tune loop" in out and "finllm-edge drift report" in out
