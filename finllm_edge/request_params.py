"""One request's fe_generate_params, built from the keyword options that Engine and Scheduler
generate()/chat() take: the one place those options become the core's struct."""

from __future__ import annotations

import ctypes as C
from typing import Any, Mapping, Sequence

from . import _native
from .backend import GenerationOptions, SamplingOptions, check_max_tokens, normalize_stop
from .structured import as_grammar_error, constraint_of


class NativeRequest:
    """`gp` is the fe_generate_params of a request (max_tokens, stop strings, ignore_eos, sampling and
    an optional grammar / JSON Schema constraint; `default_seed` is the engine's seed when the request
    sets none). The object keeps alive the buffers `gp` points into: hold it until the core has taken
    the request (the core copies them when it starts). `keep`: whatever else the start call reads
    (a chat's message array)."""

    def __init__(self, max_tokens: int, default_seed: int | None, *, stop: Sequence[str] | str | None = None,
                 sampling: SamplingOptions | None = None, ignore_eos: bool = False, keep: Any = None,
                 temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                 min_p: float | None = None, repeat_penalty: float | None = None, repeat_last_n: int | None = None,
                 seed: int | None = None, grammar: str | None = None, json_schema: Any = None,
                 response_format: Mapping[str, Any] | None = None) -> None:
        self.constraint = constraint_of(grammar, json_schema, response_format)
        gen = GenerationOptions(max_tokens=check_max_tokens(max_tokens), stop=normalize_stop(stop),
                                ignore_eos=bool(ignore_eos))
        s = (sampling or SamplingOptions()).merged(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                                   repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n,
                                                   seed=seed)
        gp = _native.lib().fe_generate_default_params()
        gp.max_tokens = gen.max_tokens
        stops, n_stop, self._keep_stops = _native.stop_array(gen.stop)
        gp.stop = C.cast(stops, C.POINTER(C.c_char_p)) if stops is not None else None
        gp.n_stop = n_stop
        gp.ignore_eos = gen.ignore_eos
        gp.sampling = s.to_c(default_seed)
        self._keep_constraint = self.constraint.apply(gp.sampling)  # the core converts and checks it
        self._keep = keep
        self.gp = gp

    def error(self, status: int) -> Exception:
        """The exception for a start or submit that returned `status` (a grammar's as GrammarError)."""
        err = _native.lib().error(status)
        return as_grammar_error(err) if self.constraint else err
