"""Chat templates rendered by the core (fe_chat_render): the same bytes as Engine.format_chat,
fe-bench and the Android app, for a template that is not inside a loaded GGUF.

    from finllm_edge.chat import render_chat_template
    prompt = render_chat_template(source, [{"role": "user", "content": "Hi"}], eos_token="<|im_end|>")

Templates are untrusted input: the core's Jinja engine has no file or process access and
bounds a render's work (steps, time, string sizes, call depth); a template past a bound is a
TemplateError naming it.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from . import _native


def render_chat_template(source: str, messages: Iterable[Mapping[str, Any]], *, add_generation_prompt: bool = True,
                         bos_token: str = "", eos_token: str = "") -> str:
    L = _native.lib()
    arr, n, _keep = _native.chat_array(list(messages))
    src, bos, eos = source.encode("utf-8"), bos_token.encode("utf-8"), eos_token.encode("utf-8")
    raw = _native.read_sized(
        lambda b, sz, out: L.fe_chat_render(src, bos, eos, arr, n, add_generation_prompt, b, sz, out),
        "chat template", 1024)
    return raw.decode("utf-8", errors="replace")
