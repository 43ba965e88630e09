"""Logits from llama.cpp for a GGUF file, through the pinned llama-cpp-python (same llama.cpp tree)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class LlamaLogits:
    """One loaded GGUF; `logits(tokens)` -> (n, vocab) float32, one sequence at a time."""

    def __init__(self, path: Path, n_ctx: int = 512, threads: int | None = None, adapter: Path | None = None):
        from llama_cpp import Llama

        self.path = Path(path)
        extra = {"lora_path": str(adapter)} if adapter else {}   # a GGUF LoRA applied at run time, scale 1
        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                         n_threads=threads or min(2, os.cpu_count() or 2), verbose=False, **extra)

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=False)

    @property
    def bos(self) -> int:
        return self.llm.token_bos()

    @property
    def add_bos(self) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(self.llm.model)))

    def logits(self, tokens: list[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(list(tokens))
        return np.array(self.llm.scores[: len(tokens)], dtype=np.float32)

    def greedy(self, prompt: list[int], n: int) -> list[int]:
        self.llm.reset()
        self.llm.eval(list(prompt))
        out = []
        for _ in range(n):
            tok = int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))
            out.append(tok)
            self.llm.eval([tok])
        return out

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def gguf_tokenize(path: Path, texts: list[str], add_special: bool = True) -> list[list[int]]:
    """Token ids llama.cpp makes for each text, from the vocabulary of a GGUF (weights are not loaded)."""
    from llama_cpp import Llama
    from llama_cpp._utils import suppress_stdout_stderr

    with suppress_stdout_stderr(disable=False):
        llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        return [llm.tokenize(t.encode("utf-8"), add_bos=add_special, special=False) for t in texts]
    finally:
        llm.close()
