"""SFT training throughput: raygen (Ray Train + DeepSpeed, 1 and 2 workers) vs a plain PyTorch loop.

    .venv/bin/python -m benchmarks.train_throughput [--layers 4] [--steps 4] [--batch-size 8] [--max-len 128] [--threads 1] [--rounds 2]

Same model for every run: SmolLM2-135M-Instruct (``raygen.models.resolve_lm('smollm2')``), truncated
to ``--layers`` decoder layers, with the data's SID tokens added (``raygen.lm.add_sid_tokens``);
full fine-tuning, AdamW, same lr, same micro-batches of ``--batch-size`` next-item examples built from
``../shared/data/amazon18-industrial/valid.csv`` (history_item_sid -> item_sid through the chat
template, ``raygen.tasks.encode_example``: loss on the SID answer + EOS).

- naive: one process, transformers ``model(input_ids, attention_mask, labels)`` (logits at every
  position), fp32, every batch padded to ``--max-len``, torch AdamW.
- ablation: the same single process with raygen's speed-ups added one at a time (cumulative):
  pad to the batch's longest, answer-only logits, SID-only head, bf16 autocast, and packing as the
  alternative layout; run in ``--rounds`` interleaved rounds, best round kept (shared hosts are
  noisy; bf16 gets one short round: without bf16 hardware it is many times slower).
- raygen_1w / raygen_2w: ``raygen.train.train`` on a local Ray: DeepSpeed (ZeRO-0 for one worker,
  ZeRO-2 for two), the fastest layout found in the ablation, the SID-only head, bf16 only if the
  ablation found it faster. Every process (naive, each worker) gets ``--threads`` torch threads
  (default 1: ratio_1w compares equal compute; 2 workers use twice the cores).

Tokens are counted the same way everywhere: real (non-pad) input tokens; the first optimizer step
of every run is warm-up and not timed; the Ray figure is summed over workers and excludes
start-up, reporting and checkpointing (the wall time of each Ray run is recorded too).
Writes ``benchmarks/results/train_throughput.json``.
"""
from __future__ import annotations

import argparse
import ast
import csv
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from raygen.configbase import Resources  # noqa: E402
from raygen.provenance import write_result  # noqa: E402
from raygen.train.collate import make_collate, pad_collate  # noqa: E402
from raygen.train.config import TrainConfig  # noqa: E402
from raygen.train.engine import TorchEngine, train_steps  # noqa: E402
from raygen.train.loss import LossModule  # noqa: E402
from raygen.train.masks import prepare_trainable  # noqa: E402

SID_TOKEN = re.compile(r"<[a-z]_\d+>")
LR = 1e-4


def prepare_model(layers: int, data_csv: Path, work: Path) -> tuple[Path, list[int], list[list[str]], list[str]]:
    """Truncated SmolLM2 + the data's SID tokens, saved to ``work/model``; the data's histories and targets."""
    rows = list(csv.DictReader(open(data_csv, encoding="utf-8")))
    histories = [ast.literal_eval(r["history_item_sid"]) for r in rows]
    targets = [r["item_sid"] for r in rows]
    tokens = sorted({t for h, y in zip(histories, targets) for s in [*h, y] for t in SID_TOKEN.findall(s)})
    out, sid_ids = save_smollm2_with_sids(layers, tokens, work)
    return out, sid_ids, histories, targets


def save_smollm2_with_sids(layers: int, sid_tokens: list[str], work: Path) -> tuple[Path, list[int]]:
    """SmolLM2 cut to ``layers`` decoder layers + ``sid_tokens``, saved to ``work/model``; its SID ids."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from raygen.lm import add_sid_tokens
    from raygen.models import resolve_lm

    src = resolve_lm("smollm2")
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, num_hidden_layers=layers)
    sid_ids = add_sid_tokens(model, tok, sid_tokens).tolist()
    out = work / "model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out, sid_ids


def encode(model_dir: Path, histories, targets, n: int, max_len: int) -> list[dict]:
    from transformers import AutoTokenizer

    from raygen.tasks.encode import encode_example

    tok = AutoTokenizer.from_pretrained(model_dir)
    out = []
    for hist, target in zip(histories[:n], targets[:n]):
        messages = [{"role": "user", "content": f"The user bought, in order: {', '.join(hist)}. Predict the next item."}]
        out.append(encode_example(tok, messages, target, max_len))
    return out


def pad_to_max_len(batch: list[dict], pad_id: int, max_len: int) -> dict:
    """The naive layout: every row padded to max_len (what padding='max_length' gives)."""
    b = pad_collate(batch, pad_id, max_len)
    extra = max_len - b["input_ids"].shape[1]
    return {"input_ids": torch.nn.functional.pad(b["input_ids"], (0, extra), value=pad_id),
            "labels": torch.nn.functional.pad(b["labels"], (0, extra), value=-100),
            "attention_mask": torch.nn.functional.pad(b["attention_mask"], (0, extra), value=0),
            "num_tokens": b["num_tokens"]}


def run_local(model_dir: Path, examples: list[dict], sid_ids: list[int], steps: int, bs: int, max_len: int,
              layout: str, logits: str, bf16: bool, threads: int) -> dict:
    """One single-process run of the shared core; tokens/s over steps 2..steps+1."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    pad_id = int(lm.config.pad_token_id if lm.config.pad_token_id is not None else lm.config.eos_token_id)
    lm, groups = prepare_trainable(lm, "full", sid_ids)
    lm.train()
    module = LossModule(lm, logits=logits, sid_ids=sid_ids, bf16=bf16, extra_ids=[lm.config.eos_token_id])
    opt = torch.optim.AdamW(groups, lr=LR)
    engine = TorchEngine(module, opt, grad_accum=1, grad_clip=1.0)
    collate = (lambda b: pad_to_max_len(b, pad_id, max_len)) if layout == "max_len" else make_collate(layout, pad_id, max_len)
    batches = [collate(examples[i * bs:(i + 1) * bs]) for i in range(steps + 1)]
    seen = []
    train_steps(engine, batches, max_steps=steps + 1, on_step=seen.append)
    timed = seen[1:]
    tokens, seconds = sum(r.tokens for r in timed), sum(r.seconds for r in timed)
    padded = sum(int(b["input_ids"].numel()) for b in batches[1:])
    return {"tokens_per_s": tokens / seconds, "seconds_per_step": seconds / len(timed), "tokens": tokens,
            "padded_positions": padded, "first_loss": seen[0].loss, "last_loss": seen[-1].loss}


def run_ray(model_dir: Path, examples: list[dict], sid_ids: list[int], steps: int, bs: int, max_len: int,
            layout: str, bf16: bool, workers: int, threads: int, work: Path) -> dict:
    from raygen.train.ray_trainer import train

    cfg = TrainConfig(mode="full", lr=LR, max_steps=steps + 1, batch_size=bs, max_len=max_len,
                      resources=Resources(count=workers, cpus=threads), deepspeed=True,
                      zero_stage=0 if workers == 1 else 2, bf16=bf16, pad_to=layout, sid_only_head=True,
                      checkpoint_every=0, keep_checkpoints=1, log_every=steps + 1, seed=0, shuffle=False)
    t0 = time.time()
    res = train(model_dir, examples[:bs * workers * (steps + 1)], sid_ids, cfg, work / f"out{workers}",
                work / "ray", resume=False, name=f"bench_{workers}w")
    return {"tokens_per_s": res["tokens_per_s"], "wall_s": round(time.time() - t0, 1),
            "setup_seconds": res.get("setup_seconds"), "train_seconds": res.get("train_seconds"),
            "final_loss": res.get("loss"), "config": {"zero_stage": cfg.zero_stage, "pad_to": layout, "bf16": bf16,
                                                       "worker_cpus": cfg.resources.cpus}}


ABLATION = [  # cumulative on pad-to-longest; packing measured as the alternative layout
    ("naive", dict(layout="max_len", logits="all", bf16=False)),
    ("+pad_to_longest", dict(layout="longest", logits="all", bf16=False)),
    ("+answer_only_logits", dict(layout="longest", logits="answer", bf16=False)),
    ("+sid_only_head", dict(layout="longest", logits="sid", bf16=False)),
    ("+bf16_autocast", dict(layout="longest", logits="sid", bf16=True)),
    ("packing+answer_only_logits", dict(layout="packing", logits="answer", bf16=False)),
    ("packing+sid_only_head", dict(layout="packing", logits="sid", bf16=False)),
]


def machine_info() -> dict:
    """What decides the bf16 row: the CPU and whether raygen sees native bf16 on it."""
    import platform

    from raygen.precision import cpu_native_bf16, resolve_bf16

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    field = lambda key: next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(key)), "")  # noqa: E731
    return {"cpu": field("model name") or platform.processor(), "cores": os.cpu_count(),
            "cpu_native_bf16": cpu_native_bf16(), "avx512_bf16_flag": "avx512_bf16" in field("flags").split(),
            "bf16_auto": resolve_bf16("auto", "cpu")[1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=4, help="decoder layers kept (SmolLM2 has 30)")
    ap.add_argument("--steps", type=int, default=4, help="timed optimizer steps (plus one warm-up step)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of the single-process runs and of each Ray worker (1 = one core per "
                         "worker; more threads degrade badly on a shared, oversubscribed host)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="interleaved rounds of the single-process runs; the best round counts (noisy hosts)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/amazon18-industrial/valid.csv")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray runs")
    ap.add_argument("--reuse-ablation", action="store_true",
                    help="keep the naive/ablation results already in --out and only run the Ray part")
    ap.add_argument("--out", type=Path, required=True, help="the result file (JSON; committed results live in benchmarks/results/)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="raygen-bench-"))
    model_dir, sid_ids, histories, targets = prepare_model(args.layers, args.data, work)
    examples = encode(model_dir, histories, targets, args.batch_size * 2 * (args.steps + 1), args.max_len)
    common = dict(steps=args.steps, bs=args.batch_size, max_len=args.max_len, threads=args.threads)

    if args.reuse_ablation:  # only (re)run the Ray part against the ablation already in --out
        from raygen.io import read_json

        result = {k: v for k, v in read_json(args.out).items() if not k.startswith(("raygen_", "ratio_", "naive_after"))}
        naive = result["naive_tokens_per_s"]
        layout, bf16 = result["chosen_for_ray"]["pad_to"], result["chosen_for_ray"]["bf16"]
        result["command_ray_part"] = " ".join([".venv/bin/python", "-m", "benchmarks.train_throughput", *sys.argv[1:]])
    else:
        result, naive, layout, bf16 = local_ablation(args, model_dir, examples, sid_ids, common)
    write_result(args.out, result)  # partial results survive an interrupted Ray part
    if not args.no_ray:
        run_ray_part(args, result, naive, layout, bf16, model_dir, examples, sid_ids, common, work)
    result["loadavg_after"] = os.getloadavg()
    write_result(args.out, result)
    shutil.rmtree(work, ignore_errors=True)  # model copy, Ray storage and checkpoints (GBs)
    print(f"wrote {args.out}")


def local_ablation(args, model_dir, examples, sid_ids, common) -> tuple[dict, float, str, bool]:
    runs: dict[str, list[dict]] = {name: [] for name, _ in ABLATION}
    for rnd in range(args.rounds):
        for name, kw in ABLATION:
            if kw["bf16"] and rnd > 0:
                continue  # bf16 without bf16 hardware is many times slower: one short round says enough
            steps = min(2, args.steps) if kw["bf16"] else args.steps
            r = run_local(model_dir, examples, sid_ids, **{**common, "steps": steps}, **kw)
            r["loadavg_1m"] = os.getloadavg()[0]
            runs[name].append(r)
            print(f"round {rnd} {name:<22} {r['tokens_per_s']:8.1f} tok/s  ({r['seconds_per_step']:.2f} s/step, "
                  f"load {r['loadavg_1m']:.1f})", flush=True)
    best = {name: max(rs, key=lambda r: r["tokens_per_s"]) for name, rs in runs.items()}
    ablation = {name: {**best[name], "all_rounds_tokens_per_s": [r["tokens_per_s"] for r in rs]}
                for name, rs in runs.items()}
    naive = best["naive"]["tokens_per_s"]
    bf16 = best["+bf16_autocast"]["tokens_per_s"] > best["+sid_only_head"]["tokens_per_s"]
    layout = "packing" if best["packing+sid_only_head"]["tokens_per_s"] > best["+sid_only_head"]["tokens_per_s"] \
        else "longest"

    result = {
        "command": " ".join([".venv/bin/python", "-m", "benchmarks.train_throughput", *sys.argv[1:]]),
        "model": f"SmolLM2-135M-Instruct truncated to {args.layers} layers, {len(sid_ids)} SID tokens added",
        "setup": {"batch_size": args.batch_size, "max_len": args.max_len, "timed_steps": args.steps,
                  "rounds": args.rounds, "mode": "full", "lr": LR, "threads": args.threads, "torch": torch.__version__,
                  "examples_mean_tokens": sum(len(e["input_ids"]) for e in examples) / len(examples)},
        "machine": machine_info(),
        "naive_tokens_per_s": naive,
        "ablation_single_process_cumulative": ablation,
        "ablation_speedup_vs_naive": {name: best[name]["tokens_per_s"] / naive for name in best},
        "chosen_for_ray": {"pad_to": layout, "bf16": bf16, "sid_only_head": True},
    }
    return result, naive, layout, bf16


def run_ray_part(args, result, naive, layout, bf16, model_dir, examples, sid_ids, common, work) -> None:
    import ray

    ray.init(num_cpus=2 * args.threads, include_dashboard=False, log_to_driver=False)
    for workers in (1, 2):
        r = run_ray(model_dir, examples, sid_ids, args.steps, args.batch_size, args.max_len, layout, bf16,
                    workers, args.threads, work)
        r["loadavg_1m"] = os.getloadavg()[0]
        result[f"raygen_{workers}w"] = r
        result[f"raygen_{workers}w_tokens_per_s"] = r["tokens_per_s"]
        result[f"ratio_{workers}w"] = r["tokens_per_s"] / naive
        print(f"raygen {workers} worker(s) (Ray+DeepSpeed) {r['tokens_per_s']:8.1f} tok/s  "
              f"(wall {r['wall_s']} s, load {r['loadavg_1m']:.1f}), ratio {result[f'ratio_{workers}w']:.2f}",
              flush=True)
        write_result(args.out, result)
    ray.shutdown()
    # naive again right after the Ray runs, to bracket how loaded the host was meanwhile
    after = run_local(model_dir, examples, sid_ids, **common, **dict(ABLATION)["naive"])
    result["naive_after_ray_tokens_per_s"] = after["tokens_per_s"]
    print(f"naive after the Ray runs {after['tokens_per_s']:8.1f} tok/s", flush=True)


if __name__ == "__main__":
    main()
