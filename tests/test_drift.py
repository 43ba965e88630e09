"""Drift monitoring (issue 17): the core's KL against a direct numpy computation, window
boundaries, deterministic calibration, hostile reference files, the session and scheduler hooks,
`finllm-edge serve --drift-ref`, and the Python, C (test_drift --stream) and JNI monitors on one
token stream."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from finllm_edge import Engine, Scheduler
from finllm_edge.drift import DriftMonitor, DriftParams, DriftReference, tokenizer_sha256
from finllm_edge.drift_build import make_reference, paragraphs, request_chunks
from finllm_edge.errors import DriftReferenceError, FinLLMEdgeError, InvalidArgumentError, ModelNotFoundError
from finllm_edge.lab import drift_corpora
from finllm_edge.models import default_model_path

pytestmark = pytest.mark.native  # every test runs the core (the host build)

SHA0 = "0" * 64
NV, NB, NN, W, A = 700, 48, 30, 64, 0.5
PARAMS = DriftParams(n_buckets=NB, n_named=NN, window_tokens=W, smoothing=A)
HEADER = 160  # bytes of the reference file's header (native/src/drift_ref.cpp)


def _skewed(rng: np.random.Generator, n: int, hi: int) -> list[int]:
    return [int(x) for x in (rng.zipf(1.3, n) % hi)]


def np_buckets(ref: DriftReference, named: list[int]) -> np.ndarray:
    """The documented bucket rule, written again in numpy (not read from the core)."""
    ids = np.arange(NV, dtype=np.uint64)
    b = (NN_eff := len(named)) + ((ids * np.uint64(2654435761)) % np.uint64(2**32)) % np.uint64(NB - NN_eff)
    b = b.astype(np.int64)
    b[np.array(named, dtype=np.int64)] = np.arange(len(named))
    return b


def np_reference(tokens: list[int]) -> tuple[list[int], np.ndarray]:
    counts = np.bincount(np.array(tokens), minlength=NV)
    order = sorted((t for t in range(NV) if counts[t] > 0), key=lambda t: (-counts[t], t))[:NN]
    return order, counts


def np_kl(window: list[int], buckets: np.ndarray, q: np.ndarray) -> float:
    c = np.bincount(buckets[np.array(window, dtype=np.int64)], minlength=NB) if window else np.zeros(NB)
    p = (c + A) / (len(window) + A * NB)
    return float(np.sum(p * np.log(p / q)))


@pytest.fixture(scope="module")
def ref_tokens() -> list[int]:
    return _skewed(np.random.default_rng(1), 6000, 200)


def test_kl_matches_numpy_through_many_updates(ref_tokens):
    ref = DriftReference.build(SHA0, NV, ref_tokens, PARAMS)
    named, counts = np_reference(ref_tokens)
    info = ref.info()
    assert info["n_named"] == len(named) == NN and info["n_ref_tokens"] == len(ref_tokens)
    buckets = np_buckets(ref, named)
    assert [ref.bucket(t) for t in range(NV)] == buckets.tolist()
    qc = np.bincount(buckets[np.array(ref_tokens)], minlength=NB)
    q = (qc + A) / (len(ref_tokens) + A * NB)
    m = DriftMonitor(ref)
    rng = np.random.default_rng(2)
    stream: list[int] = []
    checked = 0
    # > 65,536 updates: the running sums are resynchronised on the way and must stay exact
    while len(stream) < 80_000:
        req = _skewed(rng, int(rng.integers(0, 90)), 200 if len(stream) < 40_000 else NV)
        st = m.observe(req)
        stream += req
        window = stream[-W:]
        assert st.n_window == len(window) and st.n_tokens == len(stream)
        if checked % 7 == 0 or len(stream) > 79_000:
            assert st.kl == pytest.approx(np_kl(window, buckets, q), rel=1e-9, abs=1e-12)
        checked += 1
    assert st.n_requests == checked


def test_window_boundaries(ref_tokens):
    ref = DriftReference.build(SHA0, NV, ref_tokens, PARAMS)
    kls = ref.window_kls([ref_tokens[i:i + 20] for i in range(0, 4000, 20)], 300, seed=3)
    ref.calibrate(kls, 0.05, 0.01, seed=3)
    m = DriftMonitor(ref)
    far = list(range(500, 700))  # ids the reference never saw: as far as it gets
    st = m.observe(far[:W - 1])
    assert (st.n_window, st.state, st.n_evaluations) == (W - 1, "none", 0)  # not full: never an alarm
    assert st.kl > ref.info()["drift_threshold"]
    st = m.observe([])  # an empty request is a request, and the window is still not full
    assert (st.n_requests, st.n_window, st.n_evaluations) == (2, W - 1, 0)
    st = m.observe(far[W - 1:W])  # exactly full now
    assert (st.n_window, st.state, st.n_evaluations, st.n_drift) == (W, "drift", 1, 1)
    assert (st.first_drift_request, st.first_drift_tokens) == (3, W)
    st = m.observe(ref_tokens[:3 * W])  # longer than the window: only its last W tokens stay
    assert st.n_window == W
    fresh = DriftMonitor(ref).observe(ref_tokens[2 * W:3 * W])
    assert st.kl == pytest.approx(fresh.kl, rel=1e-12)
    assert st.first_drift_request == 3  # the first drift is remembered after the state falls back
    m.reset()
    st = m.status()
    assert (st.n_window, st.n_requests, st.first_drift_request, st.kl) == (0, 0, -1, 0.0)
    with pytest.raises(InvalidArgumentError, match="outside the vocabulary"):
        m.observe([1, 2, NV])
    assert m.status().n_tokens == 0  # nothing counted


def test_calibration_is_deterministic_and_an_order_statistic(ref_tokens):
    ref = DriftReference.build(SHA0, NV, ref_tokens, PARAMS)
    reqs = [ref_tokens[i:i + 25] for i in range(0, 5000, 25)]
    a, b, c = ref.window_kls(reqs, 2000, 11), ref.window_kls(reqs, 2000, 11), ref.window_kls(reqs, 2000, 12)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    ref.calibrate(a, 0.05, 0.01, seed=11)
    info = ref.info()
    s = np.sort(a)
    for rate, key in ((0.05, "watch_threshold"), (0.01, "drift_threshold")):
        k = int(np.ceil((len(a) + 1) * (1 - rate)))
        assert info[key] == s[min(k, len(a)) - 1]
        assert np.mean(a >= info[key]) <= rate + 1 / len(a)
    assert info["n_calibration_windows"] == 2000 and info["calibration_seed"] == 11
    with pytest.raises(InvalidArgumentError, match="0 < drift <= watch"):
        ref.calibrate(a, 0.01, 0.05, seed=1)


@pytest.fixture(scope="module")
def engine():
    with Engine(default_model_path(), n_ctx=512, n_threads=2) as e:
        yield e


@pytest.fixture(scope="module")
def ref_file(engine, tmp_path_factory) -> Path:
    text = drift_corpora.text("finance", 400, seed=1)
    ref, summary = make_reference(engine, text, params=DriftParams(window_tokens=256), n_windows=3000)
    path = tmp_path_factory.mktemp("drift") / "ref.fedrift"
    ref.save(path)
    ref.close()
    assert summary.n_windows == 3000 and summary.folds == 5
    return path


def test_make_reference_is_deterministic(engine, ref_file, tmp_path):
    text = drift_corpora.text("finance", 400, seed=1)
    ref, _ = make_reference(engine, text, params=DriftParams(window_tokens=256), n_windows=3000)
    ref.save(tmp_path / "again.fedrift")
    assert (tmp_path / "again.fedrift").read_bytes() == ref_file.read_bytes()
    assert paragraphs("One. Two?\n\n  Three!\nFour\n") == ["One. Two?", "Three!", "Four"]
    assert request_chunks(list(range(100)), 48) == [list(range(48)), list(range(48, 96)), [96, 97, 98, 99]]
    assert DriftReference.load(ref_file).info()["tokenizer_sha256"] == tokenizer_sha256(engine)


def _rewrite(data: bytes, fix_checksum: bool = True, **fields) -> bytes:
    """A reference file with header fields (or named/probs) changed; the checksum made valid again."""
    b = bytearray(data[:-32])
    offsets = {"n_vocab": (80, "<I"), "n_buckets": (84, "<I"), "n_named": (88, "<I"), "window": (92, "<I"),
               "smoothing": (96, "<d"), "watch": (104, "<d"), "drift": (112, "<d"), "watch_rate": (120, "<d"),
               "n_cal": (144, "<Q")}
    for k, v in fields.items():
        if k == "named0_to_named1":
            n1 = b[HEADER + 4:HEADER + 8]
            b[HEADER:HEADER + 4] = n1
        elif k == "prob0":
            n_named = struct.unpack_from("<I", b, 88)[0]
            struct.pack_into("<d", b, HEADER + 4 * n_named, v)
        else:
            off, fmt = offsets[k]
            struct.pack_into(fmt, b, off, v)
    return bytes(b) + (hashlib.sha256(bytes(b)).digest() if fix_checksum else data[-32:])


HOSTILE = {
    "empty": lambda d: b"",
    "bad_magic": lambda d: b"GGUF" + d[4:],
    "truncated_header": lambda d: d[:100],
    "truncated_body": lambda d: d[:-7],
    "trailing_bytes": lambda d: d + b"\0" * 8,
    "flipped_byte": lambda d: d[:300] + bytes([d[300] ^ 1]) + d[301:],
    "version_2": lambda d: _rewrite(d[:8] + struct.pack("<I", 2) + d[12:]),
    "n_buckets_huge": lambda d: _rewrite(d, n_buckets=0xFFFFFFFF),
    "n_named_ge_buckets": lambda d: _rewrite(d, n_named=5000),
    "window_zero": lambda d: _rewrite(d, window=0),
    "smoothing_nan": lambda d: _rewrite(d, smoothing=float("nan")),
    "threshold_inf": lambda d: _rewrite(d, drift=float("inf")),
    "watch_above_drift": lambda d: _rewrite(d, watch=1e9),
    "rate_one": lambda d: _rewrite(d, watch_rate=1.0),
    "uncalibrated": lambda d: _rewrite(d, n_cal=0),
    "duplicate_named": lambda d: _rewrite(d, named0_to_named1=True),
    "probs_not_summing_to_one": lambda d: _rewrite(d, prob0=0.5),
    "n_vocab_other": lambda d: _rewrite(d, n_vocab=1000),
}
MESSAGES = {"bad_magic": "bad magic", "truncated_header": "truncated", "truncated_body": "truncated",
            "flipped_byte": "checksum", "version_2": "version", "duplicate_named": "twice",
            "probs_not_summing_to_one": "sum", "uncalibrated": "not calibrated", "threshold_inf": "thresholds"}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_reference_files_are_refused(engine, ref_file, tmp_path, case):
    bad = tmp_path / f"{case}.fedrift"
    bad.write_bytes(HOSTILE[case](ref_file.read_bytes()))
    with pytest.raises(DriftReferenceError) as exc:
        if case == "n_vocab_other":  # a valid file for a 1000-token vocabulary: another tokenizer
            engine.enable_drift(bad)
        else:
            DriftReference.load(bad)
    assert str(bad) in str(exc.value)
    assert MESSAGES.get(case, "refused") in str(exc.value)
    with pytest.raises(DriftReferenceError):
        engine.enable_drift(bad)


def test_foreign_tokenizer_and_missing_files(engine, ref_file, tmp_path):
    ref = DriftReference.load(ref_file)
    foreign = DriftReference.build("ab" * 32, engine.n_vocab, [1, 2, 3] * 400,
                                   DriftParams(window_tokens=64))
    foreign.calibrate(foreign.window_kls([[1, 2, 3]] * 10, 50, 1), 0.05, 0.01, 1)
    foreign.save(tmp_path / "foreign.fedrift")
    with pytest.raises(DriftReferenceError, match="another tokenizer"):
        engine.enable_drift(tmp_path / "foreign.fedrift")
    with pytest.raises(ModelNotFoundError):
        engine.enable_drift(tmp_path / "missing.fedrift")
    with pytest.raises(DriftReferenceError, match="not a regular file"):
        DriftReference.load(tmp_path)
    assert ref.info()["n_calibration_windows"] == 3000


def test_session_counts_what_the_user_asked(engine, ref_file):
    mon = engine.enable_drift(ref_file)
    try:
        solo = DriftMonitor(DriftReference.load(ref_file))
        system = [{"role": "system", "content": "You are a concise finance assistant."}]
        history: list[dict] = []
        for q in drift_corpora.requests("finance", 3, seed=5):  # chat: the last user message only
            history.append({"role": "user", "content": q})
            "".join(engine.chat(system + history, max_tokens=2))
            solo.observe(engine.tokenize(q, add_special=False))
            history.append({"role": "assistant", "content": "ok"})
            got, want = mon.status(), solo.status()
            assert (got.n_tokens, got.n_requests, got.kl) == (want.n_tokens, want.n_requests, want.kl)
        # prompts: control tokens dropped; a shared prefix of >= 16 tokens (a system prompt) counts once,
        # a shorter one (the same first words of two questions) counts every time
        sys_prompt = "You are a careful analyst at a regional bank; answer in two sentences and cite numbers. "
        prev: list[int] = []
        for text in ["What is a bond coupon?", "What is a bond ladder?", sys_prompt + "What is EBITDA?",
                     sys_prompt + "What is free cash flow?"]:
            "".join(engine.generate(text, max_tokens=1))
            toks = engine.tokenize(text, add_special=True)
            k = 0
            while k < min(len(toks), len(prev)) and toks[k] == prev[k]:
                k += 1
            k = k if k >= 16 else 0
            solo.observe([t for t in toks[k:] if engine.token_piece(t, special=False) != ""])
            prev = toks
            assert mon.status().n_tokens == solo.status().n_tokens
            assert mon.status().kl == solo.status().kl
        engine.count_chat_tokens(system)  # prefill-only requests are not counted
        assert mon.status().n_requests == 7
        state = mon.state()
        assert state["n_requests"] == 7 and state["sampling"] is None and "samples" not in state
        assert len(state["window_counts"]) == state["reference"]["n_buckets"]
        mon.set_sampling(8, 1)
        "".join(engine.generate("What is a bond coupon?", max_tokens=1))
        assert len(mon.state()["samples"]) == 1
    finally:
        engine.enable_drift(None)
    with pytest.raises(InvalidArgumentError, match="no drift monitor"):
        mon.status()


def _foreign_ref(engine, path: Path) -> Path:
    foreign = DriftReference.build("ab" * 32, engine.n_vocab, [1, 2, 3] * 400, DriftParams(window_tokens=64))
    foreign.calibrate(foreign.window_kls([[1, 2, 3]] * 10, 50, 1), 0.05, 0.01, 1)
    foreign.save(path)
    return path


def test_scheduler_counts_what_a_session_counts(engine, ref_file, tmp_path):
    """The same requests on a Scheduler and on the Engine's session give the same monitor, step by
    step; then threads submit at once while another reads the monitor."""
    sys_prompt = "You are a careful analyst at a regional bank; answer in two sentences and cite numbers. "
    system = [{"role": "system", "content": "You are a concise finance assistant."}]
    history = [{"role": "user", "content": "What is a bond coupon?"}, {"role": "assistant", "content": "ok"}]
    steps = [("prompt", "What is a bond coupon?", 2), ("prompt", sys_prompt + "What is EBITDA?", 2),
             ("prompt", sys_prompt + "What is free cash flow?", 2),  # shares >= 16 tokens: counted once
             ("chat", system + [{"role": "user", "content": "What is a bond ladder?"}], 2),
             ("chat", system + history + [{"role": "user", "content": "And its yield?"}], 2),
             ("prompt", "Counting only.", 0)]  # max_tokens 0: counted by neither
    with Scheduler(default_model_path(), n_slots=4, n_ctx=512, n_threads=2) as sched:
        with pytest.raises(DriftReferenceError, match="another tokenizer"):
            sched.enable_drift(_foreign_ref(engine, tmp_path / "foreign.fedrift"))
        mon = sched.enable_drift(ref_file)
        emon = engine.enable_drift(ref_file)
        try:
            for kind, payload, n in steps:
                for backend in (sched, engine):
                    run = backend.chat if kind == "chat" else backend.generate
                    "".join(run(payload, max_tokens=n))
                got, want = mon.status(), emon.status()
                assert (got.n_requests, got.n_tokens, got.kl, got.state) == \
                    (want.n_requests, want.n_tokens, want.kl, want.state)
            assert mon.status().n_requests == 5
            # a refused file keeps the attached monitor
            with pytest.raises(ModelNotFoundError):
                sched.enable_drift(tmp_path / "missing.fedrift")
            assert mon.status().n_requests == 5

            before = mon.status()
            questions = [f"Client {t} asks: what was the margin in quarter {i}?" for t in range(4) for i in range(4)]
            errors: list[BaseException] = []
            stop = threading.Event()
            reads = [0]

            def ask(qs):
                try:
                    for q in qs:
                        "".join(sched.chat(system + [{"role": "user", "content": q}], max_tokens=2))
                except BaseException as e:  # noqa: BLE001 - reported below
                    errors.append(e)

            def read():
                while not stop.is_set():
                    mon.status()
                    json.loads(mon.state_json())
                    reads[0] += 1

            reader = threading.Thread(target=read)
            reader.start()
            askers = [threading.Thread(target=ask, args=(questions[t::4],)) for t in range(4)]
            for t in askers:
                t.start()
            for t in askers:
                t.join(120)
            stop.set()
            reader.join(30)
            assert not errors and reads[0] > 0
            after = mon.status()
            assert after.n_requests == before.n_requests + len(questions)
            assert after.n_tokens == before.n_tokens + sum(len(engine.tokenize(q, add_special=False))
                                                           for q in questions)
            assert sched.enable_drift(None) is None
            with pytest.raises(InvalidArgumentError, match="Scheduler has no drift monitor"):
                mon.status()
            mon = sched.enable_drift(ref_file)
        finally:
            engine.enable_drift(None)
    with pytest.raises(FinLLMEdgeError, match="closed"):
        mon.status()


def test_serve_drift_endpoint(engine, ref_file, tmp_path):
    """`finllm-edge serve --drift-ref`: requests through the official openai client are counted;
    GET /v1/drift is the state `finllm-edge drift report` reads; without a monitor it is a 404."""
    import httpx
    import openai

    from finllm_edge.lab.serve import ServeBackend
    from serve_helpers import running_server

    questions = ["What is EBITDA?", "How is working capital computed?", "What moves a bond's yield?"]
    with pytest.raises(DriftReferenceError, match="another tokenizer"):
        ServeBackend(None, n_ctx=512, n_threads=1, parallel=2,
                     drift_ref=_foreign_ref(engine, tmp_path / "foreign.fedrift"))
    for parallel in (1, 2):
        backend = ServeBackend(None, n_ctx=512, n_threads=1, parallel=parallel, drift_ref=ref_file)
        try:
            with running_server(backend, "m") as base:
                client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
                for q in questions:
                    client.chat.completions.create(model="m", messages=[{"role": "user", "content": q}],
                                                   max_tokens=2)
                state = httpx.get(base + "/v1/drift", timeout=30).json()
                health = httpx.get(base + "/health", timeout=30).json()
        finally:
            backend.close()
        assert state["schema"] == "finllm-edge/drift-state"
        assert state["n_requests"] == len(questions)
        assert state["n_tokens"] == sum(len(engine.tokenize(q, add_special=False)) for q in questions)
        assert health["drift"]["n_requests"] == len(questions) and health["drift"]["state"] == state["state"]
    plain = ServeBackend(None, n_ctx=512, n_threads=1, parallel=1)
    try:
        with running_server(plain, "m") as base:
            r = httpx.get(base + "/v1/drift", timeout=30)
    finally:
        plain.close()
    assert r.status_code == 404 and r.json()["error"]["code"] == "drift_not_enabled"
    assert "--drift-ref" in r.json()["error"]["message"]


def _stream(engine) -> tuple[list[list[int]], list[str]]:
    prompts = drift_corpora.requests("finance", 30, seed=9) + drift_corpora.requests("spanish", 30, seed=9)
    return [engine.tokenize(p, add_special=False) for p in prompts], prompts


def test_python_c_and_jni_monitors_agree(engine, ref_file, tmp_path):
    from finllm_edge.native.build import ensure_built
    from test_jni import JAVA_SOURCES, JVM_TEST, _find_lib, _jdk_tool

    streams, prompts = _stream(engine)
    (tmp_path / "stream.txt").write_text("\n".join(" ".join(map(str, s)) for s in streams) + "\n")
    prompts = prompts[:3] + prompts[-3:]  # the session path: a few generations (the stand-alone one gets all)
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    solo = DriftMonitor(DriftReference.load(ref_file))
    py = [(st.kl, st.state) for st in (solo.observe(s) for s in streams)]
    assert {s for _, s in py} >= {"none", "drift"}  # the stream crosses into Spanish and the monitor sees it
    # C: the ctest probe over the same file
    info = ensure_built("host")
    probe = next(p for p in Path(info.build_dir).rglob("test_drift") if p.is_file())
    out = subprocess.run([probe, "--stream", ref_file, tmp_path / "stream.txt"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    c = [(float(k), s) for k, s in (line.split() for line in out.stdout.splitlines())]
    assert c == py
    # JNI: the stand-alone DriftMonitor on the same stream, and a FinLlm session on the prompts
    classes = tmp_path / "classes"
    res = subprocess.run([_jdk_tool("javac"), "--release", "11", "-encoding", "UTF-8", "-d", classes,
                          *JAVA_SOURCES, JVM_TEST], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lib = _find_lib(info.build_dir, "finllm_jni")
    bad = tmp_path / "bad.fedrift"
    bad.write_bytes(ref_file.read_bytes()[:-1])
    res = subprocess.run([_jdk_tool("java"), "-Xcheck:jni", f"-Djava.library.path={lib.parent}", "-cp", classes,
                          "FinLlmTest", "--drift", ref_file, tmp_path / "stream.txt", default_model_path(),
                          tmp_path / "prompts.txt", bad], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    lines = res.stdout.splitlines()
    jni = [(float(x.split()[1]), x.split()[2]) for x in lines if x.startswith("S ")]
    assert jni == py
    # the session path: Python Engine vs FinLlm on the same prompts (raw prompts, BOS dropped as control)
    mon = engine.enable_drift(ref_file)
    try:
        engine.reset()
        eng = []
        for p in prompts:
            "".join(engine.generate(p, max_tokens=1))
            st = mon.status()
            eng.append((st.kl, st.state, st.n_tokens))
        jg = [(float(x.split()[1]), x.split()[2], int(x.split()[3])) for x in lines if x.startswith("G ")]
        assert jg == eng
        state = json.loads(next(x for x in lines if x.startswith("JSON "))[5:])
        assert state["n_requests"] == len(prompts) and state["kl"] == eng[-1][0]
        # FinLlmScheduler.enableDrift: the same counts as the session's
        jq = [(float(x.split()[1]), x.split()[2], int(x.split()[3])) for x in lines if x.startswith("Q ")]
        assert jq == eng
        qstate = json.loads(next(x for x in lines if x.startswith("QJSON "))[6:])
        assert qstate["n_requests"] == len(prompts) and qstate["window_counts"] == state["window_counts"]
    finally:
        engine.enable_drift(None)
    assert "PASS drift_hostile bad.fedrift" in res.stdout and "PASS sched_drift_hostile bad.fedrift" in res.stdout
    assert "WARNING in native method" not in res.stdout + res.stderr


def test_convert_stage_writes_the_reference_next_to_the_artifacts(tmp_path, engine):
    """The `drift` stage of `finllm-edge convert` (no torch needed): the reference from --drift-ref text,
    its summary, and its place in the stage list and the output plan."""
    from types import SimpleNamespace

    from finllm_edge_convert import drift_stage, outdir
    from finllm_edge_convert.pipeline import ConvertOptions, build_stages

    text = tmp_path / "tuning.txt"
    text.write_text(drift_corpora.text("finance", 300, seed=1))
    opts = ConvertOptions(out=tmp_path, drift_ref=text, drift_window=256, lora=tmp_path / "my-adapter")
    ctx = SimpleNamespace(opts=opts, artifacts={"f16": {"path": str(default_model_path())}}, notes=[], drift={})
    drift_stage.stage_drift(ctx)
    ref = DriftReference.load(tmp_path / "drift-ref.fedrift")
    summary = json.loads((tmp_path / "drift-ref.json").read_text())
    assert ref.info()["window_tokens"] == 256 and ref.info()["tokenizer_sha256"] == tokenizer_sha256(engine)
    assert summary["text_sha256"] == hashlib.sha256(text.read_bytes()).hexdigest() == ctx.drift["text_sha256"]
    assert summary["info"]["drift_threshold"] == ref.info()["drift_threshold"] and "drift: reference" in ctx.notes[0]
    assert "drift" in [s.name for s in build_stages(opts)]
    assert {"drift-ref.fedrift", "drift-ref.json"} <= set(outdir.plan_for(opts, [], []).files)
    # another adapter without --drift-ref: no reference, and a note saying how to get one
    ctx2 = SimpleNamespace(opts=ConvertOptions(out=tmp_path / "o2", lora=tmp_path / "my-adapter"), artifacts={},
                           notes=[], drift={})
    drift_stage.stage_drift(ctx2)
    assert not (tmp_path / "o2" / "drift-ref.fedrift").exists() and "--drift-ref" in ctx2.notes[0]
