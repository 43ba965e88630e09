"""The OpenAI wire format of `finllm-edge serve`: request bodies checked into typed requests,
responses and stream chunks in OpenAI's shapes, and OpenAI's error shape.

Only the shape of the protocol is decided here (which fields exist, their JSON types, what this
server does not offer). Every rule that decides tokens (sampling ranges, stop strings, finish
reasons, whether a prompt fits the context) is the core's: values go to the backend as they are
and the core's InvalidArgumentError / ContextOverflowError come back as 400s.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

MAX_STOP = 4          # OpenAI: "up to 4 sequences"
MAX_STOP_CHARS = 256  # a stop string longer than this is a mistake, not a stop string


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


@dataclass
class GenRequest:
    """What both endpoints ask the backend for."""

    kind: str                      # "chat" | "completion"
    model: str
    prompt: str | None = None      # completion
    messages: list[dict] | None = None  # chat
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None  # None: until the end of turn or a full context
    kwargs: dict = field(default_factory=dict)  # temperature, top_p, seed, stop, ignore_eos -> the core


# Fields this server accepts and ignores (they change nothing about the answer).
_IGNORED = {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "prompt_cache_key",
            "safety_identifier"}
# Fields accepted only at their "off" value: anything else is a clear 400 (not a silent no-op).
_OFF = {"presence_penalty": (0, 0.0, None), "frequency_penalty": (0, 0.0, None), "logit_bias": (None, {}),
        "logprobs": (None, False), "top_logprobs": (None, 0), "tools": (None, []), "tool_choice": (None, "none"),
        "functions": (None, []), "function_call": (None, "none"), "echo": (None, False), "best_of": (None, 1),
        "suffix": (None, ""), "modalities": (None, ["text"]), "audio": (None,), "prediction": (None,),
        "reasoning_effort": (None,), "web_search_options": (None,)}
_COMMON = {"model", "stream", "stream_options", "max_tokens", "temperature", "top_p", "n", "stop", "seed",
           "ignore_eos", "response_format"}
CHAT_FIELDS = _COMMON | {"messages", "max_completion_tokens"}
COMPLETION_FIELDS = _COMMON | {"prompt"}


def _type_name(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
            int: "integer", float: "number"}.get(type(v), type(v).__name__)


def _number(body: dict, name: str) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise bad(f"Invalid type for '{name}': expected a number, but got {_type_name(v)}.", name,
                  "invalid_type")
    return float(v)


def _integer(body: dict, name: str) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad(f"Invalid type for '{name}': expected an integer, but got {_type_name(v)}.", name,
                  "invalid_type")
    return v


def _boolean(body: dict, name: str, default: bool = False) -> bool:
    v = body.get(name)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise bad(f"Invalid type for '{name}': expected a boolean, but got {_type_name(v)}.", name, "invalid_type")
    return v


def _stop(body: dict) -> tuple[str, ...]:
    v = body.get("stop")
    if v is None:
        return ()
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise bad(f"Invalid type for 'stop': expected a string or an array of strings, but got {_type_name(v)}.",
                  "stop", "invalid_type")
    if len(items) > MAX_STOP:
        raise bad(f"'stop' has {len(items)} sequences; at most {MAX_STOP} are allowed.", "stop")
    for s in items:
        if not s:
            raise bad("'stop' sequences must not be empty strings.", "stop")
        if len(s) > MAX_STOP_CHARS:
            raise bad(f"a 'stop' sequence is {len(s)} characters long; at most {MAX_STOP_CHARS} are allowed.",
                      "stop")
    return tuple(items)


def _content(msg: dict, i: int) -> str:
    c = msg.get("content")
    if c is None:
        return ""
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        texts = []
        for part in c:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad(f"messages[{i}].content: only text parts ({{\"type\": \"text\", \"text\": ...}}) are "
                          f"supported by this model.", f"messages[{i}].content")
            texts.append(part["text"])
        return "".join(texts)
    raise bad(f"Invalid type for 'messages[{i}].content': expected a string or an array of text parts, but got "
              f"{_type_name(c)}.", f"messages[{i}].content", "invalid_type")


def _messages(body: dict) -> list[dict]:
    msgs = body.get("messages")
    if not isinstance(msgs, list):
        raise bad("Missing required parameter: 'messages'." if msgs is None else
                  f"Invalid type for 'messages': expected an array, but got {_type_name(msgs)}.", "messages",
                  "missing_required_parameter" if msgs is None else "invalid_type")
    if not msgs:
        raise bad("'messages' must contain at least one message.", "messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise bad(f"Invalid type for 'messages[{i}]': expected an object, but got {_type_name(m)}.",
                      f"messages[{i}]", "invalid_type")
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise bad(f"Invalid value for 'messages[{i}].role': {role!r}; supported roles are 'system', "
                      f"'developer', 'user' and 'assistant'.", f"messages[{i}].role")
        out.append({"role": "system" if role == "developer" else role, "content": _content(m, i)})
    return out


def parse_request(body: Any, kind: str, model_id: str, response_format_supported: bool) -> GenRequest:
    """A JSON body of /v1/chat/completions (kind "chat") or /v1/completions ("completion")."""
    if not isinstance(body, dict):
        raise bad(f"The request body must be a JSON object, not {_type_name(body)}.")
    allowed = CHAT_FIELDS if kind == "chat" else COMPLETION_FIELDS
    for name, value in body.items():
        if name in allowed or name in _IGNORED:
            continue
        if name in _OFF:
            if value not in _OFF[name]:
                raise bad(f"'{name}' is not supported by this server; leave it out.", name, "unsupported_parameter")
            continue
        raise bad(f"Unrecognized request argument supplied: {name}", name, "unknown_parameter")
    model = body.get("model")
    if not isinstance(model, str):
        raise bad("Missing required parameter: 'model'." if model is None else
                  f"Invalid type for 'model': expected a string, but got {_type_name(model)}.", "model")
    if model != model_id:
        raise APIError(404, f"The model '{model}' does not exist; this server serves '{model_id}' (GET /v1/models).",
                       param="model", code="model_not_found")
    n = _integer(body, "n")
    if n is not None and n != 1:
        raise bad(f"n = {n}: this server makes one choice per request (n=1); send several requests instead.", "n",
                  "unsupported_value")
    stream = _boolean(body, "stream")
    so = body.get("stream_options")
    include_usage = False
    if so is not None:
        if not isinstance(so, dict):
            raise bad(f"Invalid type for 'stream_options': expected an object, but got {_type_name(so)}.",
                      "stream_options", "invalid_type")
        if not stream:
            raise bad("'stream_options' is only allowed when 'stream' is true.", "stream_options")
        include_usage = _boolean(so, "include_usage")
    rf = body.get("response_format")
    if rf is not None:
        if not isinstance(rf, dict) or not isinstance(rf.get("type"), str):
            raise bad("Invalid 'response_format': expected an object with a 'type'.", "response_format",
                      "invalid_type")
        if rf["type"] != "text" and not response_format_supported:
            raise bad(f"response_format type '{rf['type']}' is not supported yet by this server (no constrained "
                      f"decoding in this build); leave it out or use {{\"type\": \"text\"}}.", "response_format",
                      "unsupported_value")
    max_tokens = _integer(body, "max_completion_tokens") if kind == "chat" else None
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens")
    if max_tokens is not None and max_tokens < 1:
        raise bad(f"max_tokens = {max_tokens}: use an integer >= 1.", "max_tokens")
    kwargs: dict[str, Any] = {}
    for name in ("temperature", "top_p"):
        v = _number(body, name)
        if v is not None:
            kwargs[name] = v
    seed = _integer(body, "seed")
    if seed is not None:
        kwargs["seed"] = seed
    stop = _stop(body)
    if stop:
        kwargs["stop"] = stop
    if _boolean(body, "ignore_eos"):  # llama.cpp's extension (benchmarks: equal work on both servers)
        kwargs["ignore_eos"] = True
    if rf is not None and rf["type"] != "text":
        kwargs["response_format"] = rf
    req = GenRequest(kind=kind, model=model, stream=stream, include_usage=include_usage, max_tokens=max_tokens,
                     kwargs=kwargs)
    if kind == "chat":
        req.messages = _messages(body)
    else:
        p = body.get("prompt")
        if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
            p = p[0]
        if isinstance(p, list):
            raise bad("'prompt' must be one string: arrays of prompts or of token ids are not supported (send one "
                      "request per prompt).", "prompt", "unsupported_value")
        if not isinstance(p, str):
            raise bad("Missing required parameter: 'prompt'." if p is None else
                      f"Invalid type for 'prompt': expected a string, but got {_type_name(p)}.", "prompt",
                      "invalid_type")
        req.prompt = p
    return req


# ----------------------------------------------------------------------------- responses

def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def usage(n_prompt: int, n_gen: int) -> dict:
    return {"prompt_tokens": n_prompt, "completion_tokens": n_gen, "total_tokens": n_prompt + n_gen}


def completion_body(req: GenRequest, rid: str, created: int, text: str, finish_reason: str, use: dict) -> dict:
    if req.kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                  "logprobs": None, "finish_reason": finish_reason}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": req.model, "system_fingerprint": None,
            "choices": [choice], "usage": use}


def chunk(req: GenRequest, rid: str, created: int, *, text: str | None = None, role: bool = False,
          finish_reason: str | None = None, use: dict | None = None, no_choice: bool = False) -> dict:
    """One SSE chunk. With include_usage every chunk carries "usage": null but the last (choices [])."""
    if req.kind == "chat":
        delta: dict = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        obj = "chat.completion.chunk"
    else:
        choices = [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}]
        obj = "text_completion"
    out = {"id": rid, "object": obj, "created": created, "model": req.model, "system_fingerprint": None,
           "choices": [] if no_choice else choices}
    if req.include_usage:
        out["usage"] = use
    return out


def model_card(model_id: str, created: int) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "finllm-edge"}


def now() -> int:
    return int(time.time())
