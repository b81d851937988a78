"""Device check of the training and generation cores (no Ray): precision choice, sequence-format SFT
throughput and constrained beam-search throughput, on whatever device torch finds (a GPU if present).

    python -m benchmarks.gpu_check --model-dir <folder with config.json + tokenizer> [--out results.json]

The model is the architecture of ``--model-dir`` (SmolLM2-135M-Instruct's config and tokenizer) with
**random weights** when the folder holds no weights (``--random``): the figures are speed and
correctness checks (finite losses that fall on a learnable synthetic pattern, valid SIDs only), not
quality. Data: a synthetic catalog of ``--items`` items with distinct 3-level SIDs and user sequences
that follow a fixed successor pattern, in raygen's sequence format (raygen.tasks.sequence).
It runs the same pure cores the Ray workers run (LossModule, TorchEngine, train_steps, Validator,
constrained_beam_search, resolve_bf16), once with ``bf16: auto`` and once in fp32.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from raygen.data.schema import samples_table  # noqa: E402
from raygen.lm.vocab import sid_text  # noqa: E402
from raygen.precision import resolve_bf16  # noqa: E402
from raygen.tasks.builders import next_item_prompt_ids  # noqa: E402
from raygen.tasks.config import TasksConfig  # noqa: E402
from raygen.tasks.encode import encode_examples  # noqa: E402
from raygen.tasks.sequence import sequence_examples  # noqa: E402
from raygen.train.collate import pack_collate  # noqa: E402
from raygen.train.engine import TorchEngine, linear_schedule, train_steps  # noqa: E402
from raygen.train.loss import LossModule  # noqa: E402
from raygen.train.masks import prepare_trainable  # noqa: E402
from raygen.train.validation import ValidSet, Validator  # noqa: E402


def synthetic(n_items: int, n_users: int, seed: int = 0):
    """Distinct 3-level SIDs and sequences where item i is mostly followed by succ[i]."""
    rng = np.random.default_rng(seed)
    codes = rng.permutation(256 ** 3)[:n_items]
    sids = {i: sid_text([int(c // 65536), int(c // 256 % 256), int(c % 256)]) for i, c in enumerate(codes)}
    succ = rng.permutation(n_items)
    rows, valid = [], []
    for u in range(n_users):
        seq = [int(rng.integers(n_items))]
        for _ in range(int(rng.integers(5, 12))):
            seq.append(int(succ[seq[-1]]) if rng.random() < 0.8 else int(rng.integers(n_items)))
        rows += [{"user_id": f"u{u}", "history": seq[:i], "target": seq[i], "split": "train"}
                 for i in range(1, len(seq) - 1)]
        valid.append((seq[:-1], seq[-1]))
    return sids, samples_table(rows), valid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--random", action="store_true", help="random weights from the folder's config")
    ap.add_argument("--layers", type=int, default=0, help="keep only the first N decoder layers (0 = all)")
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--users", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64, help="user rows per step (packed into rows of 512)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--valid-rows", type=int, default=1000)
    ap.add_argument("--out", required=True, help="the result file (JSON; committed results live in benchmarks/results/)")
    a = ap.parse_args()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tok = AutoTokenizer.from_pretrained(a.model_dir)
    sids, samples, valid_rows = synthetic(a.items, a.users)
    tokens = sorted({t + ">" for s in sids.values() for t in s.split(">") if t})
    from transformers import AddedToken

    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in tokens])
    sid_ids = tok.convert_tokens_to_ids(tokens)
    cfg = TasksConfig(max_history=10, seqrec_format="sequence")
    examples = sequence_examples(samples, sids, cfg)
    enc = encode_examples(tok, examples, 512)
    n_targets = sum(sum(1 for x in e["labels"] if x != -100) for e in enc) // 3
    prompts = next_item_prompt_ids(tok, [h for h, _ in valid_rows[:a.valid_rows]], sids, cfg)
    item_ids = sorted(sids)
    sid_matrix = [tok.convert_tokens_to_ids([t + ">" for t in sids[i].split(">") if t]) for i in item_ids]
    valid = ValidSet(prompt_ids=prompts, targets=[t for _, t in valid_rows[:a.valid_rows]], sid_matrix=sid_matrix,
                     pad_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)

    def model():
        conf = AutoConfig.from_pretrained(a.model_dir)
        if a.layers:
            conf.num_hidden_layers = a.layers
        torch.manual_seed(0)
        lm = (AutoModelForCausalLM.from_config(conf) if a.random
              else AutoModelForCausalLM.from_pretrained(a.model_dir, config=conf))
        lm.resize_token_embeddings(len(tok), mean_resizing=False)
        return lm.float().to(device)

    results = {"device": str(device), "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
               "torch": torch.__version__, "model": a.model_dir, "random_weights": a.random,
               "examples": len(enc), "targets": n_targets, "runs": {}}
    for name, setting in (("fp32", False), ("auto", "auto"), ("fp32_again", False)):  # order effects show
        use, reason = resolve_bf16(setting, device)
        lm = model()
        lm, groups = prepare_trainable(lm, "full", sid_ids)
        module = LossModule(lm, logits="sid", sid_ids=sid_ids, bf16=use, extra_ids=[tok.eos_token_id]).to(device)
        opt = torch.optim.AdamW(groups, lr=1e-3)
        engine = TorchEngine(module, opt, linear_schedule(opt, 5, a.steps + 1), 1, 1.0)
        order = np.random.default_rng(0).permutation(len(enc))
        batches = [pack_collate([enc[i] for i in order[s:s + a.batch]], valid.pad_id, 512)
                   for s in range(0, len(order) - a.batch + 1, a.batch)]
        log = []
        step = train_steps(engine, iter(batches[:1]), max_steps=1, device=device)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step = train_steps(engine, (batches[i % len(batches)] for i in range(1, a.steps + 1)), max_steps=a.steps + 1,
                           start_step=step, device=device, on_step=lambda r: log.append((r.loss, r.tokens, r.targets)))
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_s = time.perf_counter() - t0
        v = Validator(valid, beam_width=10, batch_size=256, autocast_dtype=torch.bfloat16 if use else None,
                      sid_only=True, eos_id=tok.eos_token_id)
        Validator(ValidSet(prompts[:64], valid.targets[:64], sid_matrix, valid.pad_id), beam_width=10,
                  batch_size=64, autocast_dtype=v.autocast_dtype, sid_only=True,
                  eos_id=tok.eos_token_id).evaluate(lm)  # warm-up: kernels, caches
        if device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        metrics = v.evaluate(lm)
        if device.type == "cuda":
            torch.cuda.synchronize()
        eval_s = time.perf_counter() - t1
        results["runs"][name] = {
            "bf16": use, "reason": reason, "steps": len(log), "train_s": round(train_s, 3),
            "tokens_per_s": round(sum(t for _, t, _ in log) / train_s, 1),
            "next_item_targets_per_s": round(sum(t for _, _, t in log) / 3 / train_s, 1),
            "loss_first": round(log[0][0], 6), "loss_last": round(log[-1][0], 6),
            "valid_rows": len(prompts), "eval_s": round(eval_s, 3), "eval_rows_per_s": round(len(prompts) / eval_s, 1),
            "valid": {k: round(x, 4) for k, x in metrics.items()},
            "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if device.type == "cuda" else None}
        print(name, json.dumps(results["runs"][name]), flush=True)
        del lm, module, engine, opt
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    results["command"] = " ".join(["python", "-m", "benchmarks.gpu_check", *sys.argv[1:]])
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
