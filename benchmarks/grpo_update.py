"""Seconds per GRPO update: each prompt encoded once per group (``completion_logprobs``, what the learner
runs) against the plain prompt+completion batch (``sequence_logprobs`` over ``build_sequences``).

Real prompts (the first ``--prompts`` train prompts of a run folder, as ``rl_local.py`` builds them) and a
real SFT model; each prompt gets ``--group`` catalog SIDs as completions (random rows: the update's cost
does not depend on which). One timed "update" is what :meth:`raygen.rl.learner.GrpoLearner.train_step`
does with ``kl_beta > 0``: a no-grad reference pass, then forward + backward of the policy, in
micro-batches of ``--micro-batch`` sequences. Also checks that both give the same log-probs.

    .venv/bin/python -m benchmarks.grpo_update --run runs/industrial --sft runs/q7/models_holdout/mean-s0

Writes ``benchmarks/results/grpo_update.json``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.quality_local import Data, machine  # noqa: E402
from raygen.eval.rows import Catalog, split_rows  # noqa: E402
from raygen.provenance import write_result  # noqa: E402
from raygen.lm.vocab import pad_id_of  # noqa: E402
from raygen.rl.grpo import build_sequences, completion_logprobs, sequence_logprobs  # noqa: E402
from raygen.tasks.config import TasksConfig  # noqa: E402


def chunks(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def update(model, prompts, tokens, pad_id: int, head, micro_batch: int, shared: bool) -> torch.Tensor:
    """Reference pass (no grad) + policy forward/backward of sum(log-probs); returns the log-probs [N, L]."""
    def logp(rows: slice) -> torch.Tensor:
        if shared:
            return completion_logprobs(model, prompts[rows], tokens[rows], pad_id, head)
        ids, att, cm = build_sequences(prompts[rows], tokens[rows], pad_id)
        return sequence_logprobs(model, ids, att, cm, head)[:, -tokens.shape[1]:]

    parts = chunks(len(prompts), micro_batch)
    with torch.no_grad():
        for c in parts:
            logp(c)
    model.zero_grad(set_to_none=True)
    out = []
    for c in parts:
        lp = logp(c)
        lp.sum().backward()
        out.append(lp.detach())
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run folder (data, sids) the SFT model was trained on")
    ap.add_argument("--sft", required=True, help="SFT model folder (model + tokenizer)")
    ap.add_argument("--prompts", type=int, default=16, help="prompts per update (rl.rollout_batch)")
    ap.add_argument("--group", type=int, default=8, help="completions per prompt (rl.group_size)")
    ap.add_argument("--micro-batch", type=int, default=32, help="sequences per forward/backward (rl.micro_batch)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="the result file (JSON; committed results live in benchmarks/results/)")
    a = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = Data(Path(a.run))
    tok = AutoTokenizer.from_pretrained(a.sft)
    catalog = Catalog.from_codes(d.codes, tok)
    rows = split_rows(d.samples, d.codes, tok, TasksConfig(seqrec_format="sequence", max_history=10), "train",
                      a.prompts, 0)
    sid = torch.as_tensor(np.asarray(catalog.sid_matrix))
    gen = torch.Generator().manual_seed(a.seed)
    tokens = sid[torch.randint(len(sid), (a.prompts * a.group,), generator=gen)]
    prompts = [list(p) for p in rows.prompt_ids for _ in range(a.group)]
    head = torch.as_tensor(sorted({int(t) for t in sid.reshape(-1)} | {int(tok.eos_token_id)}))
    model = AutoModelForCausalLM.from_pretrained(a.sft, dtype=torch.float32).eval()
    pad = pad_id_of(tok)

    seconds: dict[str, list[float]] = {"plain": [], "shared": []}
    results = {}
    for r in range(a.repeats + 1):                     # repeat 0 warms up both paths, not timed
        for name in ("plain", "shared"):
            t = time.perf_counter()
            results[name] = update(model, prompts, tokens, pad, head, a.micro_batch, name == "shared")
            if r:
                seconds[name].append(time.perf_counter() - t)
    lens = [len(p) for p in rows.prompt_ids]
    res = {
        "what": "seconds per GRPO update (reference pass + policy forward/backward, SID-only head) with each "
                "prompt encoded once per group (completion_logprobs, the learner's path) vs the plain "
                "prompt+completion batch (sequence_logprobs)",
        "command": "python -m benchmarks.grpo_update " + " ".join(sys.argv[1:]),
        "sft": a.sft, "prompts": a.prompts, "group": a.group, "micro_batch": a.micro_batch,
        "completion_tokens": int(tokens.shape[1]),
        "prompt_tokens_mean": float(np.mean(lens)), "prompt_tokens_max": int(max(lens)),
        "layers": model.config.num_hidden_layers,
        "plain_s": float(np.median(seconds["plain"])), "shared_s": float(np.median(seconds["shared"])),
        "plain_s_all": seconds["plain"], "shared_s_all": seconds["shared"],
        "max_abs_logprob_diff": float((results["plain"] - results["shared"]).abs().max()),
        "machine": {**machine(), "torch_threads": torch.get_num_threads()},
        "precision": "fp32",
    }
    res["speedup"] = res["plain_s"] / res["shared_s"]
    print(f"[grpo_update] {a.prompts} prompts x {a.group} (prompt {res['prompt_tokens_mean']:.0f} tokens, completion "
          f"{res['completion_tokens']}): plain {res['plain_s']:.2f}s, shared prompt {res['shared_s']:.2f}s "
          f"({res['speedup']:.1f}x), max |dlogp| {res['max_abs_logprob_diff']:.1e}", flush=True)
    write_result(Path(a.out), res)


if __name__ == "__main__":
    main()
