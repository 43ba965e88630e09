"""Chat templates from model files, rendered in a Jinja sandbox.

A GGUF's `tokenizer.chat_template` is untrusted input: it is rendered in
`jinja2.sandbox.ImmutableSandboxedEnvironment` (no attribute starting with `_`, no
mutation of lists/dicts, bounded `range`), and on top of that

* any attempt to reach an unsafe attribute raises immediately (jinja2's default is to
  render an empty string for `{{ ''.__class__ }}` and only fail on deeper access),
* the globals that carry Python functions (`cycler`, `joiner`, `lipsum`) are removed, and a
  template that names them, or names a dunder attribute anywhere, is refused at load time,
* every failure is a `TemplateError` that says which template failed and why.

Rendering follows Hugging Face's `apply_chat_template` conventions (trim_blocks,
lstrip_blocks, loopcontrols, `raise_exception`, `strftime_now`, `bos_token`/`eos_token`),
so templates written for transformers render the same here.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from .errors import TemplateError

FORBIDDEN_GLOBALS = frozenset({"cycler", "joiner", "lipsum", "self", "config", "request", "g"})
MAX_OUTPUT_CHARS = 4_000_000


class _StrictSandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment that raises on an unsafe attribute instead of rendering ''."""

    def unsafe_undefined(self, obj: Any, attribute: str):
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__} is not allowed")


def _raise_exception(message: str):
    raise TemplateError(f"the chat template raised: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


def _make_env() -> _StrictSandbox:
    env = _StrictSandbox(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"],
                         autoescape=False, undefined=jinja2.Undefined)
    for name in ("cycler", "joiner", "lipsum"):
        env.globals.pop(name, None)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _audit(ast: nodes.Template) -> None:
    """Refuse templates that name Python internals, before anything is rendered."""
    for node in ast.find_all((nodes.Name, nodes.Getattr, nodes.Const)):
        if isinstance(node, nodes.Name) and node.name in FORBIDDEN_GLOBALS:
            raise TemplateError(f"chat template refers to {node.name!r}, which is not available to templates")
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise TemplateError(f"chat template accesses the private attribute {node.attr!r}")
        if isinstance(node, nodes.Const) and isinstance(node.value, str) and node.value.startswith("__") \
                and node.value.endswith("__") and len(node.value) > 4:
            raise TemplateError(f"chat template uses the dunder name {node.value!r}")


@dataclass
class ChatTemplate:
    """A compiled, audited chat template. `render(messages)` -> the prompt text."""

    source: str
    bos_token: str = ""
    eos_token: str = ""
    name: str = "chat template"
    _template: jinja2.Template = field(init=False, repr=False)

    def __post_init__(self) -> None:
        env = _make_env()
        try:
            ast = env.parse(self.source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{self.name} is not valid Jinja (line {exc.lineno}): {exc.message}") from exc
        _audit(ast)
        try:
            self._template = env.from_string(self.source)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{self.name} could not be compiled: {exc}") from exc

    def render(self, messages: Iterable[Mapping[str, Any]], *, add_generation_prompt: bool = True,
               **extra: Any) -> str:
        msgs = [_check_message(m, i) for i, m in enumerate(messages)]
        context = {"messages": msgs, "add_generation_prompt": add_generation_prompt,
                   "bos_token": self.bos_token, "eos_token": self.eos_token, **extra}
        try:
            out = self._template.render(**context)
        except TemplateError:
            raise
        except SecurityError as exc:
            raise TemplateError(f"{self.name} tried to reach Python internals and was refused: {exc}") from exc
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{self.name} failed to render: {exc}") from exc
        except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError) as exc:
            raise TemplateError(f"{self.name} failed to render: {type(exc).__name__}: {exc}") from exc
        if len(out) > MAX_OUTPUT_CHARS:
            raise TemplateError(f"{self.name} rendered {len(out)} characters; refusing (limit {MAX_OUTPUT_CHARS})")
        return out


def _check_message(m: Mapping[str, Any], i: int) -> dict:
    if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
        raise TemplateError(f"message {i} must be a mapping with 'role' and 'content', got {m!r:.80}")
    if not isinstance(m["role"], str):
        raise TemplateError(f"message {i}: role must be a string")
    return dict(m)
