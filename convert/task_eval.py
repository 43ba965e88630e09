"""The finance task evaluation of `convert`'s quality stage: every artifact answers the shipped task set
(convert/taskset.py) through the runtime that ships (finllm_edge.Engine: the C core, greedy), and is scored
against the gold answers.

Prompt: a fixed instruction, two few-shot examples (from the set's own shot stream), then
"Passage: ...\\nQuestion: ...\\nAnswer:"; the answer is the greedy continuation up to the first newline
(at most MAX_ANSWER_TOKENS tokens). Plain greedy with a strict parser (no grammar-constrained decoding):

- number questions: the FIRST number in the answer (thousands separators dropped, decimals kept) must
  equal the gold as a decimal ("412" = "412.0", "1,250" = "1250"); a unit or currency word around it is fine.
- span questions: the answer, lower-cased, with punctuation and a leading "the" removed, must equal the gold
  or one of its listed aliases.

Per artifact (every figure with a 95% percentile-bootstrap interval over PASSAGES, the independent unit: the
questions of one passage share it; the same resampled passages for every artifact, so ratios are paired):
- exact_match: share of questions answered exactly,
- numeric_equal_gold: of the number questions answered with a number, the share whose number equals the gold,
- numeric_in_source: of those answer numbers, the share that appears in the passage (not made up),
- number_answered: share of number questions answered with any number,
- accuracy_kept: exact_match / exact_match of the F16 merged model (the seed's "98% kept"),
and for the merged F16 against the base model without the adapter: the difference in exact match and
merged / base - 1 (what the LoRA adds; the seed reports +27%).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from .errors import TaskSetError

MAX_ANSWER_TOKENS = 16
N_CTX = 1024
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
MAX_TASKSET_BYTES = 8 << 20          # a task file is untrusted input: bounded before it is parsed
MAX_PASSAGES, MAX_QUESTIONS, MAX_TEXT = 5000, 50, 4000
INSTRUCTION = ("Answer each question about the passage with a number or a few words copied from the passage.\n\n")

_NUM = re.compile(r"(?<![\w.])[-\u2212]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])[-\u2212]?\d+(?:\.\d+)?")


# ---- the task file ----------------------------------------------------------------------

def load_taskset(path: Path) -> dict:
    """Read and check a task set file (sizes and types before use)."""
    path = Path(path)
    if not path.is_file():
        raise TaskSetError(f"task set {path} does not exist; pass --task-set FILE (made by "
                              "python -m finllm_edge_convert.taskset) or leave it out for the shipped set")
    size = path.stat().st_size
    if size > MAX_TASKSET_BYTES:
        raise TaskSetError(f"task set {path} is {size} bytes; at most {MAX_TASKSET_BYTES} are read")
    try:
        ts = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TaskSetError(f"task set {path} is not UTF-8 JSON: {exc}") from None
    _check_taskset(ts, path)
    return ts


def _check_taskset(ts, path) -> None:
    def bad(what):
        raise TaskSetError(f"task set {path}: {what}; regenerate it with python -m finllm_edge_convert.taskset")

    if not isinstance(ts, dict) or ts.get("schema_version") != 1:
        bad("not a schema_version 1 task set")
    for key, cap in (("shots", 10), ("passages", MAX_PASSAGES)):
        items = ts.get(key)
        if not isinstance(items, list) or not items or len(items) > cap:
            bad(f"'{key}' must be a list of 1..{cap} passages")
        for p in items:
            if not isinstance(p, dict) or not isinstance(p.get("text"), str) or not 0 < len(p["text"]) <= MAX_TEXT:
                bad(f"a passage in '{key}' has no text or more than {MAX_TEXT} characters")
            qs = p.get("questions")
            if not isinstance(qs, list) or not qs or len(qs) > MAX_QUESTIONS:
                bad(f"passage {p.get('id')!r} must have 1..{MAX_QUESTIONS} questions")
            for q in qs:
                if not (isinstance(q, dict) and isinstance(q.get("question"), str) and isinstance(q.get("answer"), str)
                        and q.get("kind") in ("number", "span") and isinstance(q.get("aliases", []), list)):
                    bad(f"question {q!r:.80} of passage {p.get('id')!r} lacks question/answer/kind")
                if q["kind"] == "number" and parse_number(q["answer"]) is None:
                    bad(f"number question {q.get('id')!r} has gold answer {q['answer']!r}, which is not a number")


# ---- prompts and scoring ------------------------------------------------------------------

def _block(text: str, question: str) -> str:
    return f"Passage: {text}\nQuestion: {question}\nAnswer:"


def few_shot_prefix(ts: dict) -> str:
    """The instruction and the shots: each shot passage once, then its questions and answers."""
    parts = [INSTRUCTION]
    for shot in ts["shots"]:
        parts.append(f"Passage: {shot['text']}\n")
        parts += [f"Question: {q['question']}\nAnswer: {q['answer']}\n" for q in shot["questions"]]
        parts.append("\n")
    return "".join(parts)


def prompt_for(prefix: str, passage: dict, q: dict) -> str:
    return prefix + _block(passage["text"], q["question"])


def _to_decimal(s: str) -> Decimal | None:
    try:
        return Decimal(s.replace(",", "").replace("\u2212", "-"))
    except InvalidOperation:
        return None


def parse_number(answer: str) -> Decimal | None:
    """The first number in `answer` as a Decimal ('1,250 million' -> 1250, '8.4%' -> 8.4), else None."""
    m = _NUM.search(answer)
    return _to_decimal(m.group(0)) if m else None


def numbers_in(text: str) -> set[Decimal]:
    return {d for m in _NUM.finditer(text) if (d := _to_decimal(m.group(0))) is not None}


def normalize_span(s: str) -> str:
    s = s.strip().lower()
    s = re.sub(r"[\"'`.,;:!?()\[\]]", "", s)
    s = re.sub(r"^the\s+", "", s)
    return re.sub(r"\s+", " ", s).strip()


def score(passage: dict, q: dict, answer: str) -> dict:
    """One answer against the gold: {correct, number, equal_gold, in_source} (number fields None for spans)."""
    if q["kind"] == "number":
        got = parse_number(answer)
        gold = parse_number(q["answer"])
        eq = got is not None and got == gold
        return {"correct": eq, "number": None if got is None else str(got), "equal_gold": eq if got is not None
                else None, "in_source": None if got is None else got in numbers_in(passage["text"])}
    accepted = {normalize_span(a) for a in [q["answer"], *q.get("aliases", [])]}
    return {"correct": normalize_span(answer) in accepted, "number": None, "equal_gold": None, "in_source": None}


# ---- running an artifact through the core -----------------------------------------------

def answer_all(model_path: Path, ts: dict, threads: int | None = None, engine_kwargs: dict | None = None,
               progress=None) -> list[dict]:
    """Greedy answers of one GGUF (through finllm_edge.Engine) to every question, in set order."""
    from finllm_edge import Engine

    prefix = few_shot_prefix(ts)
    out = []
    with Engine(model_path, n_threads=threads, n_ctx=N_CTX, seed=0, **(engine_kwargs or {})) as eng:
        for p in ts["passages"]:
            for q in p["questions"]:
                c = eng.complete(prompt_for(prefix, p, q), MAX_ANSWER_TOKENS, temperature=0.0, stop=["\n"])
                out.append({"passage": p["id"], "id": q.get("id"), "answer": c.text.strip(), **score(p, q, c.text)})
                if progress is not None:
                    progress.update(1)
    return out


def _rescore(answers: list[dict], ts: dict) -> list[dict]:
    """Earlier answers scored again against `ts` (they must answer exactly its questions, in order)."""
    qs = [(p, q) for p in ts["passages"] for q in p["questions"]]
    if [a.get("id") for a in answers] != [q.get("id") for _p, q in qs]:
        raise TaskSetError("cached answers do not match the task set's questions; score the model again")
    return [{"passage": p["id"], "id": q.get("id"), "answer": a["answer"], **score(p, q, a["answer"])}
            for a, (p, q) in zip(answers, qs)]


# ---- aggregation and intervals -------------------------------------------------------------

COUNTS = ("n", "correct", "n_number", "answered_number", "equal_gold", "in_source")


def per_passage(answers: list[dict], ts: dict) -> dict[str, np.ndarray]:
    """Counts per passage (the bootstrap unit), in set order."""
    kind = {q.get("id"): q["kind"] for p in ts["passages"] for q in p["questions"]}
    index = {p["id"]: i for i, p in enumerate(ts["passages"])}
    c = {k: np.zeros(len(index)) for k in COUNTS}
    for a in answers:
        i = index[a["passage"]]
        c["n"][i] += 1
        c["correct"][i] += bool(a["correct"])
        if kind[a["id"]] == "number":
            c["n_number"][i] += 1
            if a["number"] is not None:
                c["answered_number"][i] += 1
                c["equal_gold"][i] += bool(a["equal_gold"])
                c["in_source"][i] += bool(a["in_source"])
    return c


def resample_index(n_units: int, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(samples, n_units) unit indices drawn with replacement; one draw shared by every artifact (paired)."""
    return np.random.default_rng(seed).integers(0, n_units, size=(samples, n_units))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def interval(values: np.ndarray) -> list[float] | None:
    """Percentile 95% interval of bootstrap replicates (replicates with an undefined value dropped)."""
    v = values[np.isfinite(values)]
    return None if v.size == 0 else [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]


def ratio_interval(num, den, idx: np.ndarray) -> list[float] | None:
    """95% interval of sum(num)/sum(den), resampling units by `idx`."""
    return interval(_ratio(np.asarray(num, float)[idx].sum(1), np.asarray(den, float)[idx].sum(1)))


FIGURES = {  # figure -> (numerator count, denominator count)
    "exact_match": ("correct", "n"),
    "numeric_equal_gold": ("equal_gold", "answered_number"),
    "numeric_in_source": ("in_source", "answered_number"),
    "number_answered": ("answered_number", "n_number"),
}


@dataclass
class TaskScore:
    name: str
    file: str
    n_questions: int
    exact_match: float | None
    numeric_equal_gold: float | None
    numeric_in_source: float | None
    number_answered: float | None
    accuracy_kept: float | None = None       # exact_match / exact_match of the reference (F16 merged)
    ci95: dict = field(default_factory=dict)
    bits_per_weight: float | None = None
    file_bytes: int | None = None
    seconds: float | None = None
    counts: dict = field(default_factory=dict)


def summarize(name: str, file: str, counts: dict, idx: np.ndarray, ref_counts: dict | None) -> TaskScore:
    tot = {k: float(v.sum()) for k, v in counts.items()}
    vals = {f: (tot[n] / tot[d] if tot[d] else None) for f, (n, d) in FIGURES.items()}
    ci = {f: ratio_interval(counts[n], counts[d], idx) for f, (n, d) in FIGURES.items()}
    kept = None
    if ref_counts is not None:
        kept, ci["accuracy_kept"] = paired_kept(counts, ref_counts, idx)
    return TaskScore(name=name, file=file, n_questions=int(tot["n"]), accuracy_kept=kept, ci95=ci,
                     counts={k: int(v) for k, v in tot.items()}, **vals)


def paired_kept(counts: dict, ref: dict, idx: np.ndarray) -> tuple[float | None, list[float] | None]:
    """exact_match(artifact) / exact_match(reference) and its paired bootstrap interval."""
    a = counts["correct"].sum() / counts["n"].sum()
    r = ref["correct"].sum() / ref["n"].sum()
    ra = _ratio(counts["correct"][idx].sum(1), counts["n"][idx].sum(1))
    rr = _ratio(ref["correct"][idx].sum(1), ref["n"][idx].sum(1))
    return (float(a / r) if r else None), interval(_ratio(ra, rr))


def lora_gain(merged: dict, base: dict, idx: np.ndarray) -> dict:
    """What the adapter adds on the task: merged - base exact match (points) and merged / base - 1."""
    m = float(merged["correct"].sum() / merged["n"].sum())
    b = float(base["correct"].sum() / base["n"].sum())
    rm = _ratio(merged["correct"][idx].sum(1), merged["n"][idx].sum(1))
    rb = _ratio(base["correct"][idx].sum(1), base["n"][idx].sum(1))
    return {"base_exact_match": b, "merged_exact_match": m, "difference": m - b,
            "relative": (m / b - 1) if b else None,
            "ci95": {"difference": interval(rm - rb), "relative": interval(_ratio(rm, rb) - 1),
                     "base_exact_match": interval(rb)}}


def as_dict(s: TaskScore) -> dict:
    return asdict(s)


def evaluate(artifacts: dict[str, dict], ref_name: str, ts: dict, threads: int | None = None,
             base: dict | None = None, progress_factory=None, cached: dict | None = None) -> dict:
    """Score every artifact on the task set. `artifacts`: name -> {"path", "bits_per_weight", "file_bytes",
    optional "format" (ONNX folders are not core artifacts and are left out, with a note) and optional
    "engine_options" (keyword arguments of finllm_edge.Engine, e.g. a runtime adapter: such a row is one
    more entry)}; `ref_name` is the F16 merged model. `base`: the model without the adapter ({"path"}), for
    what the LoRA adds. `cached`: name -> (answers, seconds) of an earlier evaluate() on the same task set and
    file (greedy answers are deterministic), scored again instead of generated again. Returns the JSON-ready
    "task" section of the quality report."""
    import time

    idx = resample_index(len(ts["passages"]))
    n_q = sum(len(p["questions"]) for p in ts["passages"])
    counts, seconds, notes = {}, {}, []
    todo = dict(artifacts)
    if base is not None:
        todo = {"base (no adapter)": base, **todo}
    for name, a in todo.items():
        if a.get("format", "gguf") != "gguf":
            notes.append(f"{name}: not scored on the task (a {a['format']} folder; the task runs on the core)")
            continue
        if cached and name in cached:
            answers, seconds[name] = _rescore(cached[name][0], ts), cached[name][1]
            counts[name] = (per_passage(answers, ts), answers)
            continue
        bar = progress_factory(n_q, f"task: {name}") if progress_factory else None
        t0 = time.perf_counter()
        answers = answer_all(Path(a["path"]), ts, threads, a.get("engine_options"), bar)
        seconds[name] = round(time.perf_counter() - t0, 1)
        if bar is not None:
            bar.close()
        counts[name] = (per_passage(answers, ts), answers)
    ref = counts[ref_name][0]
    rows = []
    for name, (c, _answers) in counts.items():
        a = todo[name]
        s = summarize(name, Path(a["path"]).name, c, idx, ref)
        s.bits_per_weight, s.file_bytes, s.seconds = a.get("bits_per_weight"), a.get("file_bytes"), seconds[name]
        rows.append(asdict(s))
    out = {"task_set": {k: ts.get(k) for k in ("generator", "seed", "n_passages", "questions_per_passage")},
           "n_questions": n_q, "n_passages": len(ts["passages"]), "reference": ref_name,
           "decoding": f"finllm_edge.Engine (the C core), greedy, stop at newline, <= {MAX_ANSWER_TOKENS} tokens, "
                       "no grammar (strict answer parser)",
           "intervals": f"95% percentile bootstrap over passages, {BOOTSTRAP_SAMPLES} resamples, seed "
                        f"{BOOTSTRAP_SEED}, paired across artifacts",
           "artifacts": rows, "notes": notes,
           "answers": {name: ans for name, (_c, ans) in counts.items()}}
    if base is not None:
        out["lora_gain"] = lora_gain(ref, counts["base (no adapter)"][0], idx)
    return out
