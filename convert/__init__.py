"""finllm_edge_convert: the heavy conversion toolchain behind `finllm-edge convert`.

Importing this package is cheap (no torch). The stages live in small modules:

    checks        input checks before any work (files, adapter vs base, arch, LoRA variant, NaN/Inf, disk)
    hf_loader     the base model: a Hugging Face folder (memory-mapped safetensors) or a GGUF base
    adapter       a PEFT LoRA adapter folder (config + memory-mapped weights)
    merge         W' = W + scale * B @ A, streamed one tensor at a time into out/merged/
    architectures registry: HF model_type -> GGUF arch, tensor names, hyper-parameters
    gguf_writer   merged folder -> F32/F16/BF16 GGUF (tokenizer_gguf writes the vocab)
    quantize      llama-quantize (pinned build) -> Q8_0 / Q4_0 / Q4_K_M ...
    awq, awq_stage, quant_grids   activation-aware scaling searched on the target format's grid
    mixed_precision               tensor types within a bits/weight budget, by measured error per bit
    parity        F16 GGUF in llama.cpp vs merged model in torch (logits + greedy text)
    quality       PPL / KLD / top-1 per artifact vs the F16 merged model (+ upstream cross-check)
    taskset       the finance extraction/QA task set generator (seeded; the shipped set is its output)
    task_eval     every artifact answers the task set through the core (greedy): exact match, numeric
                  fidelity, accuracy kept vs F16, base vs merged, passage-bootstrap intervals
    quality_report, quality_plot  stage `report`: the task in quality.json/.md, quality.png
    manifest      sha256, sizes, bits/weight, options, versions
    pipeline      the explicit stage list and `convert()`, the Python entry point

Python entry point: `finllm_edge_convert.pipeline.convert(ConvertOptions(...)) -> ConversionResult`.
"""

__all__ = ["convert", "ConvertOptions", "ConversionResult"]


def __getattr__(name):
    if name in __all__:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
