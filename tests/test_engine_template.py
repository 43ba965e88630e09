"""Chat templates: rendering (SmolLM2, a Qwen2-style template) and the sandbox. No model needed."""

import pytest

from finllm_edge.chat_template import ChatTemplate
from finllm_edge.errors import TemplateError

# tokenizer.chat_template of SmolLM2-135M-Instruct (as stored in its GGUF)
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# A tiny template in the style of Qwen2.5's: whitespace control, namespace, tools branch, tojson.
QWEN2_STYLE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- else %}{{- 'You are Qwen.' }}{%- endif %}
    {{- '\\n# Tools\\n' }}
    {%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}
    {{- '<|im_end|>\\n' }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(n_user=0) %}
{%- for message in messages %}
    {%- if message.role == 'user' %}{%- set ns.n_user = ns.n_user + 1 %}{%- endif %}
    {%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or (message.role == 'assistant') %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}"""

MSGS = [{"role": "user", "content": "What is EBITDA?"}]


def test_smollm2_template_renders_like_transformers():
    out = ChatTemplate(SMOLLM2).render(MSGS)
    assert out == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                   "<|im_end|>\n<|im_start|>user\nWhat is EBITDA?<|im_end|>\n<|im_start|>assistant\n")


def test_smollm2_template_keeps_given_system_and_no_generation_prompt():
    msgs = [{"role": "system", "content": "Be brief."}, *MSGS, {"role": "assistant", "content": "Earnings."}]
    out = ChatTemplate(SMOLLM2).render(msgs, add_generation_prompt=False)
    assert out == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is EBITDA?<|im_end|>\n"
                   "<|im_start|>assistant\nEarnings.<|im_end|>\n")


def test_qwen2_style_template():
    t = ChatTemplate(QWEN2_STYLE)
    assert t.render(MSGS) == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                              "assistant.<|im_end|>\n<|im_start|>user\nWhat is EBITDA?<|im_end|>\n"
                              "<|im_start|>assistant\n")
    tools = [{"name": "fx_rate", "parameters": {"pair": "string"}}]
    out = t.render([{"role": "system", "content": "Sys."}, *MSGS], tools=tools, add_generation_prompt=False)
    assert out == ('<|im_start|>system\nSys.\n# Tools\n\n{"name": "fx_rate", "parameters": {"pair": "string"}}'
                   "<|im_end|>\n<|im_start|>user\nWhat is EBITDA?<|im_end|>\n")


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ messages|attr('__class__') }}",
    "{{ messages['__class__'] }}",
    "{{ self.__init__.__globals__ }}",
    "{% for m in messages %}{{ m.__class__.__base__.__subclasses__() }}{% endfor %}",
])
def test_templates_reaching_python_internals_are_refused(source):
    with pytest.raises(TemplateError):
        ChatTemplate(source).render(MSGS)


def test_dunder_built_at_runtime_is_refused_by_the_sandbox():
    # The name is assembled at render time, so only the sandbox (not the load-time audit) sees it.
    t = ChatTemplate("{% set a = '__cla' ~ 'ss__' %}{{ messages|attr(a) }}")
    with pytest.raises(TemplateError, match="refused"):
        t.render(MSGS)


def test_templates_cannot_mutate_inputs():
    msgs = [dict(MSGS[0])]
    with pytest.raises(TemplateError):
        ChatTemplate("{{ messages.append({'role': 'x', 'content': 'y'}) }}").render(msgs)
    assert msgs == MSGS


def test_raise_exception_and_syntax_errors_become_template_errors():
    with pytest.raises(TemplateError, match="only user"):
        ChatTemplate("{{ raise_exception('only user and assistant roles') }}").render(MSGS)
    with pytest.raises(TemplateError, match="not valid Jinja"):
        ChatTemplate("{% for m in messages %}")
    with pytest.raises(TemplateError, match="role"):
        ChatTemplate(SMOLLM2).render([{"content": "no role"}])
