"""Chat templates rendered by the core (llama.cpp's C++ Jinja engine, fe_chat_render).

Rendered bytes are compared with Jinja2 configured as transformers' apply_chat_template
configures it (sandboxed, trim_blocks, lstrip_blocks): the core keeps Jinja's semantics. The
shipped SmolLM2 template, a Qwen2.5/ChatML template, a Llama-3 style template and one with a
system-message branch (Mistral-style). Hostile templates end in a TemplateError within a second.
No model needed (Engine-side equality is in test_differential.py).
"""

import time

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from finllm_edge.chat import render_chat_template
from finllm_edge.errors import TemplateError

SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

QWEN25 = """{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- else %}
    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant") %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

LLAMA3 = """{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{%- if system_message %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- endif %}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

MISTRAL_SYSTEM = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('conversation roles must alternate user/assistant') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported') }}
    {%- endif %}
{%- endfor %}
"""

TEMPLATES = {"smollm2": SMOLLM2, "qwen2.5": QWEN25, "llama3": LLAMA3, "mistral-system": MISTRAL_SYSTEM}
TOKENS = {"smollm2": ("<|im_start|>", "<|im_end|>"), "qwen2.5": ("", "<|im_end|>"),
          "llama3": ("<|begin_of_text|>", "<|eot_id|>"), "mistral-system": ("<s>", "</s>")}

CONVERSATIONS = [
    [{"role": "user", "content": "What is EBITDA?"}],
    [{"role": "system", "content": "  Be brief; quote figures in EUR.  "},
     {"role": "user", "content": "Revenue rose 12% to €4.1bn. Margin?"}],
    [{"role": "system", "content": "You are a credit analyst."}, {"role": "user", "content": "Q1 coverage?"},
     {"role": "assistant", "content": "EBIT / interest = 3.2x."}, {"role": "user", "content": "Und Q2? 利润 📈"}],
]


def jinja2_render(source, messages, add_generation_prompt, bos, eos):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(msg):
        raise ValueError(msg)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(source).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                          bos_token=bos, eos_token=eos)


@pytest.mark.parametrize("name", list(TEMPLATES))
@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("gen", [True, False])
def test_core_renders_byte_identical_to_jinja2(name, conv, gen):
    bos, eos = TOKENS[name]
    msgs = CONVERSATIONS[conv]
    try:
        want = jinja2_render(TEMPLATES[name], msgs, gen, bos, eos)
    except ValueError as exc:  # the template refuses this conversation: so must the core, with its message
        with pytest.raises(TemplateError, match="roles"):
            render_chat_template(TEMPLATES[name], msgs, add_generation_prompt=gen, bos_token=bos, eos_token=eos)
        assert "roles" in str(exc)
        return
    got = render_chat_template(TEMPLATES[name], msgs, add_generation_prompt=gen, bos_token=bos, eos_token=eos)
    assert got.encode() == want.encode()


def test_smollm2_template_exact_text():
    out = render_chat_template(SMOLLM2, CONVERSATIONS[0])
    assert out == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                   "<|im_end|>\n<|im_start|>user\nWhat is EBITDA?<|im_end|>\n<|im_start|>assistant\n")


HOSTILE = {
    "nested loops 10^10": "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
    "one range reused": "{% set r = range(1000) %}{% for a in r %}{% for b in r %}{% for c in r %}{% endfor %}"
                        "{% endfor %}{% endfor %}",
    "huge range": "{% for a in range(10000000000) %}{% endfor %}",
    "power tower": "{{ 9**9**9 }}",
    "string repeat": "{{ 'x' * 100000000000 }}",
    "empty string repeat": "{% set s = '' * 1000000000000 %}{{ s }}",
    "doubling": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}"
                "{{ ns.s }}",
    "deep recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "mutual recursion": "{% macro f(n) %}{{ g(n) }}{% endmacro %}{% macro g(n) %}{{ f(n) }}{% endmacro %}{{ f(0) }}",
    "output flood": "{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}",
    "syntax": "{% for m in messages %}",
    "unterminated string": "{{ 'abc }}",
    "deep nesting": "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
    "raise": "{{ raise_exception('only user and assistant roles') }}",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_templates_fail_fast_with_a_typed_error(name):
    t0 = time.perf_counter()
    with pytest.raises(TemplateError):
        render_chat_template(HOSTILE[name], CONVERSATIONS[0])
    # the bound is 1 s of render time (wall clock, checked every 256 steps); parse errors are instant.
    # 5 s leaves room for a loaded CI machine; an unbounded template would run for minutes or exhaust memory
    assert time.perf_counter() - t0 < 5.0


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ messages|attr('__class__') }}",
    "{{ self.__init__.__globals__ }}",
])
def test_no_python_internals_exist_in_the_core_engine(source):
    # Not a Python sandbox: the names do not exist. Either an error or empty output, never data.
    try:
        out = render_chat_template(source, CONVERSATIONS[0])
    except TemplateError:
        return
    assert "class" not in out and "os" not in out.lower().split()


def test_messages_need_role_and_content():
    with pytest.raises(ValueError, match="role"):
        render_chat_template(SMOLLM2, [{"content": "no role"}])
