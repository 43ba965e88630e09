"""Making a drift reference from tuning text (convert time): split the text into requests, cross-fit
the calibration, build the final reference. The counting, the KL and the threshold rule are the
core's (fe_drift_ref_build / _window_kls / _calibrate); this module only orders the work.

Calibration (deterministic): each line of the text (a paragraph, or one request per line) is
tokenized whole, as running text, and cut into requests of REQUEST_TOKENS tokens; the lines are
dealt round-robin into `folds` folds; for each fold a reference is built from the other folds and
KL(window || reference) is recorded after each request of a seeded stream drawn from the held-out
fold. The reference shipped is fold 0's: every calibration KL then comes from a reference of the
same size as the shipped one, on text it did not see. (A reference built from all the text would
be larger than the ones calibrated: KL(window || reference) grows with the reference's size through
the buckets the window's smoothing fills, so its in-domain KLs would sit above the thresholds.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .drift import DriftParams, DriftReference, tokenizer_sha256
from .errors import InvalidArgumentError

REQUEST_TOKENS = 48  # tokens per calibration request: about one user question


def paragraphs(text: str) -> list[str]:
    """The text's non-empty lines (a paragraph or a request per line)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def request_chunks(tokens: list[int], size: int = REQUEST_TOKENS) -> list[list[int]]:
    """A paragraph's tokens cut into requests of `size` tokens (the last one shorter)."""
    return [tokens[i:i + size] for i in range(0, len(tokens), size)]


@dataclass
class ReferenceSummary:
    n_lines: int
    n_tokens: int
    folds: int
    n_windows: int
    seed: int
    watch_rate: float
    drift_rate: float
    info: dict
    heldout_kl_quantiles: dict  # p50/p90/p99 of the pooled held-out window KLs


def make_reference(engine, text: str, *, params: DriftParams | None = None, watch_rate: float = 0.05,
                   drift_rate: float = 0.01, n_windows: int = 20000, folds: int = 5,
                   seed: int = 20260917) -> tuple[DriftReference, ReferenceSummary]:
    """A calibrated reference for `engine`'s tokenizer from tuning text (see the module docstring)."""
    if folds < 2:
        raise InvalidArgumentError(f"folds = {folds}: use 2 or more")
    lines = [engine.tokenize(p, add_special=False) for p in paragraphs(text)]
    lines = [t for t in lines if t]
    window = (params or DriftParams()).window_tokens or engine_default_window()
    n_tok = sum(len(t) for t in lines)
    if len(lines) < 2 * folds or n_tok < 2 * window:
        raise InvalidArgumentError(
            f"the drift reference text has {len(lines)} non-empty lines / {n_tok} tokens; it needs at least "
            f"{2 * folds} lines and {2 * window} tokens (twice the {window}-token window): give more tuning "
            f"text (--drift-ref) or a smaller window")
    sha, n_vocab = tokenizer_sha256(engine), engine.n_vocab
    per_fold = -(-n_windows // folds)
    kls, ref = [], None
    for f in range(folds):
        held = [c for t in lines[f::folds] for c in request_chunks(t)]
        fit = [x for i, t in enumerate(lines) if i % folds != f for x in t]
        ref_f = DriftReference.build(sha, n_vocab, fit, params)
        kls.append(ref_f.window_kls(held, per_fold, seed + f))
        if f == 0:
            ref = ref_f
        else:
            ref_f.close()
    pooled = np.concatenate(kls)[:n_windows]
    ref.calibrate(pooled, watch_rate, drift_rate, seed)
    q = {f"p{p}": float(np.percentile(pooled, p)) for p in (50, 90, 99)}
    return ref, ReferenceSummary(len(lines), n_tok, folds, int(pooled.size), seed, watch_rate, drift_rate,
                                 ref.info(), q)


def engine_default_window() -> int:
    from . import _native

    return int(_native.lib().fe_drift_default_params().window_tokens)
