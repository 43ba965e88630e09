"""Stage `parity`: the F16 GGUF run by llama.cpp must reproduce the merged model run by torch.

Each side tokenizes the text itself: torch gets the HF tokenizer's ids (the merged folder's
tokenizer), llama.cpp gets the GGUF's own tokenization. The two id sequences must be identical
(otherwise the GGUF would read different tokens than the model, which logits on shared ids cannot
see); then max |logit difference|, mean and max KLD(torch || llama.cpp), top-1 agreement; then a
greedy continuation of 16 tokens from both (each from its own tokenization of the prompt), which
must be identical, as ids and as text.

Tolerance (stated, checked): max abs logit diff <= 0.25 and mean KLD <= 1e-3. The F16 GGUF and
the merged folder hold the same fp16 weights; the remaining difference is llama.cpp's fp16
matmul arithmetic against torch's fp32 arithmetic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import ParityError
from .llama_eval import LlamaLogits, log_softmax

PARITY_TEXT = ("Credit memo. The borrower's net debt to EBITDA fell to 1.4 times as free cash flow rose, "
               "interest coverage improved to 6.2 times, and the board raised the dividend by 6 percent.")
GREEDY_PROMPT = "Quarterly report. Revenue rose 8 percent year over year, and operating margin"


@dataclass(frozen=True)
class Tolerance:
    max_abs_logit_diff: float = 0.25
    mean_kld: float = 1e-3


@dataclass
class ParityResult:
    n_tokens: int
    max_abs_logit_diff: float
    mean_kld: float
    max_kld: float
    top1_agreement: float
    greedy_tokens: int
    greedy_identical: bool | None
    greedy_hf: list[int]
    greedy_llama: list[int]
    greedy_text: str
    tolerance: dict
    passed: bool
    tokens_identical: bool = True            # HF and GGUF tokenization of the parity text and greedy prompt
    first_token_difference: int | None = None


def hf_greedy(model, prompt: list[int], n: int) -> list[int]:
    import torch

    ids = torch.tensor([prompt])
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(ids).logits[0, -1].argmax())
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out


def check_parity(merged_dir: Path, f16: Path, greedy_tokens: int = 16, require_greedy: bool = True,
                 tol: Tolerance = Tolerance(), threads=None, text: str = PARITY_TEXT) -> ParityResult:
    import torch
    from transformers import AutoTokenizer

    from .hf_loader import load_hf_model

    model = load_hf_model(merged_dir)
    hf_tok = AutoTokenizer.from_pretrained(merged_dir)
    hf_ids = list(hf_tok(text)["input_ids"])
    hf_prompt = list(hf_tok(GREEDY_PROMPT)["input_ids"])
    with LlamaLogits(f16, n_ctx=256, threads=threads) as ll:
        tokens = ll.tokenize(text)
        prompt = ll.tokenize(GREEDY_PROMPT)
        same = tokens == hf_ids and prompt == hf_prompt
        lc = ll.logits(tokens)
        g_ll = ll.greedy(prompt, greedy_tokens) if greedy_tokens else []
        g_text = ll.llm.detokenize(g_ll).decode("utf-8", "replace") if g_ll else ""
    first_diff = next((i for i, (a, b) in enumerate(zip(hf_ids, tokens)) if a != b),
                      None if len(hf_ids) == len(tokens) else min(len(hf_ids), len(tokens)))
    with torch.no_grad():
        hf = model(torch.tensor([hf_ids])).logits[0].float().numpy()
    g_hf = hf_greedy(model, hf_prompt, greedy_tokens) if greedy_tokens else []
    if hf.shape != lc.shape:                     # different tokenization: compare the common prefix
        n = min(len(hf), len(lc))
        hf, lc = hf[:n], lc[:n]
    lp_hf, lp_ll = log_softmax(hf), log_softmax(lc)
    kld = (np.exp(lp_hf) * (lp_hf - lp_ll)).sum(-1)
    greedy_same = (g_hf == g_ll and hf_tok.decode(g_hf) == hf_tok.decode(g_ll)) if greedy_tokens else None
    res = ParityResult(
        n_tokens=len(tokens), max_abs_logit_diff=float(np.abs(hf - lc).max()), mean_kld=float(kld.mean()),
        max_kld=float(kld.max()), top1_agreement=float((hf.argmax(-1) == lc.argmax(-1)).mean()),
        greedy_tokens=greedy_tokens, greedy_identical=greedy_same,
        greedy_hf=g_hf, greedy_llama=g_ll, greedy_text=g_text, tolerance=asdict(tol), passed=False,
        tokens_identical=same, first_token_difference=first_diff,
    )
    res.passed = (same and res.max_abs_logit_diff <= tol.max_abs_logit_diff and res.mean_kld <= tol.mean_kld
                  and (res.greedy_identical or not require_greedy))
    return res


def enforce(res: ParityResult, require_greedy: bool) -> None:
    if res.passed:
        return
    if not res.tokens_identical:
        raise ParityError(
            f"the F16 GGUF tokenizes the parity text differently from the HF tokenizer (first difference at token "
            f"{res.first_token_difference}); llama.cpp would feed the model different tokens. This is a tokenizer "
            "conversion bug: report it with parity.json")
    raise ParityError(
        f"F16 GGUF does not reproduce the merged model: max |dlogit| {res.max_abs_logit_diff:.4f} "
        f"(tol {res.tolerance['max_abs_logit_diff']}), mean KLD {res.mean_kld:.2e} (tol {res.tolerance['mean_kld']})"
        + (f", greedy identical={res.greedy_identical}" if require_greedy else "")
        + ". This is a converter bug for this architecture: report it with parity.json"
    )
