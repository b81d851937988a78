"""Next-item SFT throughput of the two seqrec formats, 'prompt' vs 'sequence', on the Industrial train split.

    .venv/bin/python -m benchmarks.seqrec_throughput [--layers 4] [--steps 10] [--rounds 2] [--threads 2]
        [--prompt-batch 16] [--seq-batch 32]

Single process, no Ray; the same model, optimizer and precision for both formats, so the figures
isolate the format:

- data: ``../shared/data/amazon18-industrial`` through raygen's loader (``data.max_history=10``); SIDs
  from MiniOneRec's ``reference_sids.json`` (item id -> 3 tokens; items sharing a SID are left as they
  are: irrelevant to throughput);
- model: SmolLM2-135M-Instruct (``raygen.models.resolve_lm('smollm2')``) truncated to ``--layers``
  decoder layers, the SID tokens added (``raygen.lm.add_sid_tokens``); full fine-tuning
  (``prepare_trainable(lm, 'full', sid_ids)``), AdamW lr 1e-4, grad clip 1.0, SID-only head
  (``LossModule(logits='sid', extra_ids=[eos])``), precision from ``resolve_bf16('auto', cpu)``;
- prompt format: ``seqrec_examples`` + ``encode_examples`` (one chat example per (history, target)
  sample, loss on the SID + EOS), micro-batches of ``--prompt-batch`` examples padded to the longest;
- sequence format: ``sequence_examples`` + ``encode_examples`` (one row per user window: prefix, then
  the items' SIDs, loss on every item after the first), micro-batches of ``--seq-batch`` rows packed
  into rows of at most ``--pack-len`` tokens (``pack_collate``, default 256).

Timing: per format one untimed warm-up step then ``--steps`` timed optimizer steps (one micro-batch
each), formats interleaved over ``--rounds`` rounds, best round kept. Batches are drawn from the
examples in a fixed shuffled order (seed 0). Reported: real tokens/s (``num_tokens``), examples/s,
next-item targets/s (prompt: one per example; sequence: SID-labelled tokens / SID length) and the
seconds one epoch would take at that rate. Writes ``benchmarks/results/seqrec_throughput.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from raygen.data.schema import SkipLog  # noqa: E402
from raygen.provenance import write_result  # noqa: E402
from raygen.train.collate import IGNORE_INDEX, pack_collate, pad_collate  # noqa: E402
from raygen.train.engine import TorchEngine, train_steps  # noqa: E402
from raygen.train.loss import LossModule  # noqa: E402
from raygen.train.masks import prepare_trainable  # noqa: E402

LR = 1e-4
GRAD_CLIP = 1.0
MAX_LEN = 512
MAX_HISTORY = 10
FORMATS = ("prompt", "sequence")


def load_industrial(data_dir: Path):
    """``(samples, sids, sid_tokens, load_report)``: raygen's loader + MiniOneRec's reference SIDs."""
    from raygen.data.config import DataConfig
    from raygen.data.load import load_data

    _, samples, report = load_data(DataConfig(source="minionerec", path=data_dir, max_history=MAX_HISTORY))
    ref = json.loads((data_dir / "reference_sids.json").read_text(encoding="utf-8"))
    sids = {int(k): "".join(v) for k, v in ref.items()}
    lengths = {len(v) for v in ref.values()}
    if len(lengths) != 1:
        raise ValueError(f"reference SIDs of mixed lengths {sorted(lengths)}")
    tokens = sorted({t for v in ref.values() for t in v})
    return samples, sids, tokens, lengths.pop(), report


def prepare_model(layers: int, sid_tokens: list[str], work: Path) -> tuple[Path, list[int]]:
    """Truncated SmolLM2 + the SID tokens, saved to ``work/model`` (each run reloads it fresh)."""
    from benchmarks.train_throughput import save_smollm2_with_sids

    return save_smollm2_with_sids(layers, sid_tokens, work)


def build_examples(model_dir: Path, samples, sids: dict[int, str], sid_len: int) -> tuple[dict, dict]:
    """Encoded examples per format and their per-epoch stats (examples, tokens, targets)."""
    from transformers import AutoTokenizer

    from raygen.tasks.builders import seqrec_examples
    from raygen.tasks.config import TasksConfig
    from raygen.tasks.encode import encode_examples
    from raygen.tasks.sequence import sequence_examples

    tok = AutoTokenizer.from_pretrained(model_dir)
    encoded, stats = {}, {}
    for fmt in FORMATS:
        cfg = TasksConfig(seqrec_format=fmt, max_history=MAX_HISTORY, max_len=MAX_LEN)
        skips = SkipLog()
        t0 = time.perf_counter()
        if fmt == "prompt":
            raw = seqrec_examples(samples, sids, cfg, "train", skips)
            targets = len(raw)
        else:
            raw = sequence_examples(samples, sids, cfg, "train", skips)
            targets = sum(len(e["sids"]) - e["first_target"] for e in raw)
        enc = encode_examples(tok, raw, MAX_LEN, skips)
        if len(enc) != len(raw):
            raise RuntimeError(f"{fmt}: {len(raw) - len(enc)} examples lost in encoding: {skips.to_dict()}")
        labelled = sum(sum(1 for y in e["labels"] if y != IGNORE_INDEX) for e in enc)
        per_target = sid_len + 1 if fmt == "prompt" else sid_len  # prompt answers end with EOS
        if labelled != targets * per_target:
            raise RuntimeError(f"{fmt}: {labelled} labelled tokens != {targets} targets x {per_target}")
        encoded[fmt] = enc
        stats[fmt] = {"examples": len(enc), "tokens_per_epoch": sum(len(e["input_ids"]) for e in enc),
                      "labelled_tokens_per_epoch": labelled, "targets_per_epoch": targets,
                      "mean_tokens_per_example": sum(len(e["input_ids"]) for e in enc) / len(enc),
                      "max_tokens_per_example": max(len(e["input_ids"]) for e in enc),
                      "build_encode_seconds": round(time.perf_counter() - t0, 2), "skips": skips.to_dict()}
    n_train = sum(1 for s in samples.column("split").to_pylist() if s == "train")
    if not stats["prompt"]["targets_per_epoch"] == stats["sequence"]["targets_per_epoch"] == n_train:
        raise RuntimeError(f"next-item targets differ: prompt {stats['prompt']['targets_per_epoch']}, sequence "
                           f"{stats['sequence']['targets_per_epoch']}, train samples {n_train}")
    return encoded, stats


def make_batches(examples: list[dict], fmt: str, bs: int, n: int, pad_id: int, pack_len: int = MAX_LEN) -> list[dict]:
    """``n`` collated micro-batches of ``bs`` examples, in a fixed shuffled order (seed 0)."""
    order = np.random.default_rng(0).permutation(len(examples))
    if bs * n > len(examples):
        raise ValueError(f"{fmt}: {n} batches of {bs} need {bs * n} examples, only {len(examples)}")
    collate = pad_collate if fmt == "prompt" else pack_collate
    return [collate([examples[j] for j in order[i * bs:(i + 1) * bs]], pad_id=pad_id, max_len=pack_len)
            for i in range(n)]


def run_format(model_dir: Path, batches: list[dict], fmt: str, bs: int, sid_ids: list[int], sid_len: int,
               bf16: bool, threads: int) -> dict:
    """One fresh model trained on ``batches`` (first step warm-up); rates over the timed steps."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lm, groups = prepare_trainable(lm, "full", sid_ids)
    lm.train()
    module = LossModule(lm, logits="sid", sid_ids=sid_ids, bf16=bf16, extra_ids=[lm.config.eos_token_id])
    engine = TorchEngine(module, torch.optim.AdamW(groups, lr=LR), grad_accum=1, grad_clip=GRAD_CLIP)
    seen = []
    load0 = os.getloadavg()[0]
    train_steps(engine, batches, max_steps=len(batches), on_step=seen.append)
    timed, timed_batches = seen[1:], batches[1:]
    seconds = sum(r.seconds for r in timed)
    tokens = sum(r.tokens for r in timed)
    labelled = sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in timed_batches)
    per_target = sid_len + 1 if fmt == "prompt" else sid_len
    targets = labelled // per_target
    examples = bs * len(timed)
    if fmt == "prompt" and targets != examples:
        raise RuntimeError(f"prompt: {targets} targets in {examples} examples")
    return {"seconds": seconds, "seconds_per_step": seconds / len(timed), "timed_steps": len(timed),
            "tokens": tokens, "examples": examples, "targets": targets,
            "padded_positions": sum(int(b["input_ids"].numel()) for b in timed_batches),
            "tokens_per_s": tokens / seconds, "examples_per_s": examples / seconds, "targets_per_s": targets / seconds,
            "first_loss": seen[0].loss, "last_loss": seen[-1].loss,
            "loadavg_1m_before": load0, "loadavg_1m_after": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=4, help="decoder layers kept (SmolLM2 has 30)")
    ap.add_argument("--steps", type=int, default=10, help="timed optimizer steps per format (plus one warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best round of each format counts")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--prompt-batch", type=int, default=16, help="prompt-format examples per step")
    ap.add_argument("--seq-batch", type=int, default=32, help="sequence-format user rows per step (packed)")
    ap.add_argument("--pack-len", type=int, default=256, help="row length of the packed sequence format")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/amazon18-industrial")
    ap.add_argument("--out", type=Path, required=True, help="the result file (JSON; committed results live in benchmarks/results/)")
    args = ap.parse_args()

    from raygen.precision import cpu_native_bf16, resolve_bf16

    bf16, bf16_reason = resolve_bf16("auto", torch.device("cpu"))
    work = Path(tempfile.mkdtemp(prefix="raygen-seqrec-bench-"))
    try:
        samples, sids, sid_tokens, sid_len, _ = load_industrial(args.data)
        model_dir, sid_ids = prepare_model(args.layers, sid_tokens, work)
        encoded, epoch = build_examples(model_dir, samples, sids, sid_len)
        cfg = json.loads((model_dir / "config.json").read_text())
        pad_id = int(cfg.get("pad_token_id") if cfg.get("pad_token_id") is not None else cfg["eos_token_id"])
        bs = {"prompt": args.prompt_batch, "sequence": args.seq_batch}
        batches = {f: make_batches(encoded[f], f, bs[f], args.steps + 1, pad_id, args.pack_len) for f in FORMATS}
        runs: dict[str, list[dict]] = {f: [] for f in FORMATS}
        for rnd in range(args.rounds):
            for fmt in FORMATS:
                r = run_format(model_dir, batches[fmt], fmt, bs[fmt], sid_ids, sid_len, bf16, args.threads)
                runs[fmt].append(r)
                print(f"round {rnd} {fmt:<8} {r['tokens_per_s']:8.1f} tok/s {r['examples_per_s']:7.2f} ex/s "
                      f"{r['targets_per_s']:7.2f} targets/s ({r['seconds_per_step']:.2f} s/step, "
                      f"load {r['loadavg_1m_after']:.1f})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best = {f: max(rs, key=lambda r: r["targets_per_s"]) for f, rs in runs.items()}
    formats = {}
    for f in FORMATS:
        e, b = epoch[f], best[f]
        formats[f] = {**e, "batch": bs[f], "layout": "pad_to_longest" if f == "prompt" else f"packing max_len {args.pack_len}",
                      "best_round": b, "all_rounds_targets_per_s": [r["targets_per_s"] for r in runs[f]],
                      "tokens_per_s": b["tokens_per_s"], "examples_per_s": b["examples_per_s"],
                      "targets_per_s": b["targets_per_s"],
                      "steps_per_epoch": -(-e["examples"] // bs[f]),
                      "seconds_per_epoch": e["targets_per_epoch"] / b["targets_per_s"]}
    ratio = formats["sequence"]["targets_per_s"] / formats["prompt"]["targets_per_s"]
    result = {
        "command": " ".join([".venv/bin/python", "-m", "benchmarks.seqrec_throughput", *sys.argv[1:]]),
        "data": {"path": str(args.data), "train_samples": epoch["prompt"]["targets_per_epoch"],
                 "max_history": MAX_HISTORY, "sid_len": sid_len, "sid_tokens": len(sid_tokens),
                 "items_with_sid": len(sids), "distinct_sids": len(set(sids.values()))},
        "model": f"SmolLM2-135M-Instruct truncated to {args.layers} layers, {len(sid_ids)} SID tokens added",
        "settings": {"layers": args.layers, "steps": args.steps, "rounds": args.rounds, "threads": args.threads,
                     "prompt_batch": args.prompt_batch, "seq_batch": args.seq_batch, "max_len": MAX_LEN, "pack_len": args.pack_len,
                     "mode": "full", "optimizer": "AdamW", "lr": LR, "grad_clip": GRAD_CLIP,
                     "logits": "sid (SID rows + EOS)", "bf16": bf16, "bf16_reason": bf16_reason,
                     "torch": torch.__version__},
        "machine": {"cpu_count": os.cpu_count(), "loadavg_end": os.getloadavg(), "cpu_native_bf16": cpu_native_bf16(),
                    "platform": platform.platform(), "processor": platform.processor()},
        "formats": formats,
        "ratio_sequence_over_prompt_targets_per_s": ratio,
        "ratio_sequence_over_prompt_seconds_per_epoch": (formats["sequence"]["seconds_per_epoch"]
                                                         / formats["prompt"]["seconds_per_epoch"]),
        "target_ratio": 10.0,
        "meets_target": ratio >= 10.0,
    }
    write_result(args.out, result)

    print(f"\nprecision: {'bf16' if bf16 else 'fp32'} ({bf16_reason}); threads {args.threads}; best of {args.rounds} round(s)")
    head = f"{'format':<9}{'examples':>9}{'tok/epoch':>11}{'targets':>9}{'tok/s':>9}{'ex/s':>8}{'targets/s':>11}{'s/epoch':>10}"
    print(head)
    for f in FORMATS:
        r = formats[f]
        print(f"{f:<9}{r['examples']:>9}{r['tokens_per_epoch']:>11}{r['targets_per_epoch']:>9}{r['tokens_per_s']:>9.1f}"
              f"{r['examples_per_s']:>8.2f}{r['targets_per_s']:>11.2f}{r['seconds_per_epoch']:>10.0f}")
    print(f"sequence/prompt next-item targets/s: {ratio:.2f}x (target >= 10x: {'met' if ratio >= 10 else 'not met'})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
