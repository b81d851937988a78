"""Scaling benchmark: throughput of each distributed stage with 1, 2, ... workers / actors on whatever Ray
cluster it is given, the scaling efficiency against one worker, and where every worker ran.

Stages (``--stages``, any subset, in this order):

- ``corpus_embed``: the corpus stage's Ray Data embedding actors (``raygen.corpus.ray_layer.embed_dataset``,
  what ``embed_items`` collects) over ``--items`` synthetic items; items/s.
- ``corpus_teacher``: the teacher (keyword + search-query) actors (``keyword_dataset``, what
  ``keyword_items`` collects) over ``--teacher-items`` items, the 'hf' backend on ``--model``; items/s.
  Both corpus stages: steady state as ``corpus_throughput.py`` measures it (items after the first output
  block / time from the first block to the last: actor start-up and model load excluded), every item id
  back exactly once (rows in = rows out).
- ``sft_ddp``, ``sft_zero2``, ``sft_zero3``: ``raygen.train.ray_trainer.train`` (Ray Train, torch DDP over
  gloo / DeepSpeed ZeRO-2 / ZeRO-3), ``--steps`` full fine-tuning steps of ``--batch-size`` examples per
  worker, a checkpoint every ``--steps // 2`` steps into the shared ``--work`` folder; tokens/s summed over
  the workers from step 2 on (Ray Train's own figure, as in ``train_throughput.py``: start-up, reporting
  and checkpointing excluded).
- ``eval``: ``raygen.eval.ray_layer.evaluate_distributed`` (constrained beam search, ``--beam``) of
  ``--prompts`` prompts; prompts/s end to end (the pool's start-up and model load included: the eval stage
  starts its pool for every call).
- ``rollout``: a warm ``raygen.generation.pool.RolloutPool`` (``rl_throughput.rollout_rate``: warm-up batch,
  best of ``--repeats``) generating ``--group`` rollouts for each of ``--prompts`` prompts; prompts/s
  (rollouts/s = prompts/s x group).

For each stage and worker count: the throughput, the scaling efficiency throughput(n) / (n x
throughput(1)), and the node of every worker / actor, read from Ray's GCS actor table (class name ->
node id), so a multi-node placement is shown, not assumed. A failing run records its error in its row and
the benchmark goes on. The JSON (``--out``) is rewritten after every run; a PNG plot goes beside it.

Cluster: ``--address auto`` joins a running cluster (e.g. under ``ray job submit``); ``--simulate-nodes N
--cpus-per-node C`` starts ``ray.cluster_utils.Cluster`` with N nodes on this machine (its own temp folder,
so no other Ray on the machine finds it). ``--work`` must be a folder every node sees (models, the SFT's
Ray Train storage and exported models): a shared file system on a real cluster; on one machine any local
folder is shared.

Model: by default a tiny random Llama on SmolLM2-135M-Instruct's real tokenizer (``benchmarks/_tiny.py``),
so the whole benchmark runs on a laptop in minutes; ``--model`` takes any HF causal-LM folder (e.g.
``~/.cache/raygen/models/smollm2-135m-instruct``). The SID tokens are added to it in ``--work``.

    python -m benchmarks.scaling --simulate-nodes 2 --cpus-per-node 1 --workers 1,2
    ray job submit --address http://HEAD:8265 --working-dir . -- python -m benchmarks.scaling --address auto \\
        --workers 1,2,4,8 --work /shared/raygen_scaling --model ~/.cache/raygen/models/smollm2-135m-instruct
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from raygen.provenance import write_result  # noqa: E402

STAGES = ("corpus_embed", "corpus_teacher", "sft_ddp", "sft_zero2", "sft_zero3", "eval", "rollout")
WORKER_CLASS = {"corpus_embed": "EmbedActor", "corpus_teacher": "KeywordActor", "sft_ddp": "RayTrainWorker",
                "sft_zero2": "RayTrainWorker", "sft_zero3": "RayTrainWorker", "eval": "RolloutActor",
                "rollout": "RolloutActor"}
"""The substring of the Ray actor class name of each stage's workers (Ray Data names its pool's actors
``MapWorker(MapBatches(EmbedActor))``; Ray Train V2's workers are ``RayTrainWorker``)."""
SFT = {"sft_ddp": (False, 0), "sft_zero2": (True, 2), "sft_zero3": (True, 3)}
"""stage -> (deepspeed, zero stage)."""
MEASURE = {
    "corpus_embed": "items/s, steady state (after the first output block; actor start-up and model load excluded)",
    "corpus_teacher": "items/s, steady state (after the first output block; actor start-up and model load excluded)",
    "sft": "tokens/s (real tokens) summed over workers, steps 2..N (start-up, reports, checkpoints excluded)",
    "eval": "prompts/s end to end (actor start-up and model load included)",
    "rollout": "prompts/s of a warm pool, best of --repeats batches (rollouts/s = prompts/s x group)",
}


@dataclass
class Setup:
    """What every stage run shares: the model with SID tokens (in the shared work folder) and the inputs."""

    args: argparse.Namespace
    work: Path
    model_dir: Path
    model_desc: str
    sid_ids: list[int]
    sid_matrix: object
    pad_id: int
    examples: list[dict]
    prompts: list[list[int]]
    items: object
    teacher_items: object


def prepare(args, work: Path) -> Setup:
    import numpy as np

    from benchmarks._tiny import SID_TOKENS, catalog, examples, items, prompts, tiny_model, with_sid_tokens

    if args.model:
        src, desc = Path(args.model).expanduser(), args.model
    else:
        src, desc = tiny_model(work / "tiny_base"), "tiny random Llama (2 layers, hidden 64) on SmolLM2's tokenizer"
    desc += f" + {len(SID_TOKENS)} SID tokens"
    model_dir, tok, sid_ids = with_sid_tokens(src, work / "model")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    sid = catalog(sid_ids, np.random.default_rng(0), args.catalog)
    return Setup(args, work, model_dir, desc, sid_ids, sid, int(pad_id), examples(tok, args.examples),
                 prompts(tok, args.prompts), items(args.items), items(args.teacher_items))


# ------------------------------------------------------------------------------------------ stages

def _resources(s: Setup, n: int):
    from raygen.configbase import Resources

    return Resources(count=n, cpus=s.args.cpus_per_worker, gpus=s.args.gpus_per_worker)


def _corpus(ds_fn, items, cfg) -> dict:
    from benchmarks.corpus_throughput import stream_rates

    t0 = time.perf_counter()
    r = stream_rates(ds_fn(items, cfg), items, t0)
    return {"throughput": r["steady_items_per_s"], "unit": "items/s", "end_to_end": r["end_to_end_items_per_s"],
            "wall_s": r["total_s"], "first_block_s": r["first_block_s"], "rows_in": items.num_rows,
            "rows_out": r["rows_out"]}


def corpus_embed(s: Setup, n: int) -> dict:
    from raygen.corpus.config import CorpusConfig
    from raygen.corpus.ray_layer import embed_dataset

    cfg = CorpusConfig(embed_model=s.args.embed_model, embed_batch_size=s.args.embed_batch_size,
                       embed_resources=_resources(s, n))
    return _corpus(embed_dataset, s.items, cfg)


def corpus_teacher(s: Setup, n: int) -> dict:
    from raygen.corpus.config import CorpusConfig
    from raygen.corpus.ray_layer import keyword_dataset

    cfg = CorpusConfig(keyword_backend="hf", teacher_model=str(s.model_dir), keyword_batch_size=8,
                       n_queries=s.args.teacher_queries, keyword_resources=_resources(s, n))
    return _corpus(keyword_dataset, s.teacher_items, cfg)


def sft(s: Setup, n: int, stage: str) -> dict:
    from raygen.train.config import TrainConfig
    from raygen.train.ray_trainer import train

    deepspeed, zero = SFT[stage]
    steps = s.args.steps
    cfg = TrainConfig(mode="full", resources=_resources(s, n), deepspeed=deepspeed, zero_stage=zero,
                      batch_size=s.args.batch_size, max_steps=steps, checkpoint_every=max(1, steps // 2),
                      keep_checkpoints=2, log_every=steps, lr=1e-3, max_len=256, shuffle=False)
    storage = s.work / "ray_train"
    t0 = time.perf_counter()
    r = train(s.model_dir, s.examples, s.sid_ids, cfg, s.work / "sft_out" / f"{stage}_{n}w", storage, resume=False,
              name=f"{stage}_{n}w")
    ckpt = Path(r["checkpoint"]) if r.get("checkpoint") else None
    return {"throughput": r["tokens_per_s"], "unit": "tokens/s", "wall_s": time.perf_counter() - t0,
            "setup_seconds": r.get("setup_seconds"), "train_seconds": r.get("train_seconds"),
            "steps": r["final_step"], "world_size": r["world_size"], "final_loss": r.get("loss"),
            "checkpoint_every": cfg.checkpoint_every, "storage_path": str(storage),
            "checkpoints": sorted(p.name for p in Path(r["run_path"]).glob("step_*")),
            "checkpoint": str(ckpt) if ckpt else None, "checkpoint_exists": bool(ckpt and ckpt.is_dir()),
            "checkpoint_files": sorted(str(p.relative_to(ckpt)) for p in ckpt.rglob("*") if p.is_file())
            if ckpt and ckpt.is_dir() else [],
            "exported_model": r.get("model_dir")}


def evaluate(s: Setup, n: int) -> dict:
    import torch

    from raygen.eval.ray_layer import evaluate_distributed

    t0 = time.perf_counter()
    items, _ = evaluate_distributed(str(s.model_dir), s.prompts, torch.as_tensor(s.sid_matrix), s.args.beam,
                                    s.pad_id, batch_size=8, resources=_resources(s, n))
    wall = time.perf_counter() - t0
    return {"throughput": len(s.prompts) / wall, "unit": "prompts/s", "wall_s": wall, "rows_in": len(s.prompts),
            "rows_out": int(items.shape[0]), "beam": s.args.beam}


def rollout(s: Setup, n: int) -> dict:
    from benchmarks.rl_throughput import rollout_rate

    a = s.args
    rate, best = rollout_rate(n, str(s.model_dir), s.sid_matrix, s.pad_id, s.prompts, a.group, a.rollout_mode,
                              a.repeats, num_cpus=a.cpus_per_worker, num_gpus=a.gpus_per_worker)
    return {"throughput": rate / a.group, "unit": "prompts/s", "rollouts_per_s": rate, "batch_s": best,
            "group": a.group, "mode": a.rollout_mode, "prompts": len(s.prompts)}


def run_stage(s: Setup, stage: str, n: int) -> dict:
    if stage in SFT:
        return sft(s, n, stage)
    return {"corpus_embed": corpus_embed, "corpus_teacher": corpus_teacher, "eval": evaluate,
            "rollout": rollout}[stage](s, n)


# --------------------------------------------------------------------------------------- placement

def cluster_nodes() -> list[dict]:
    """The alive nodes, the head first: label, node id, IP, CPUs, GPUs."""
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    alive.sort(key=lambda n: ("node:__internal_head__" not in n["Resources"], n["NodeID"]))
    return [{"node": f"node{i}", "node_id": n["NodeID"], "ip": n["NodeManagerAddress"],
             "cpus": n["Resources"].get("CPU", 0.0), "gpus": n["Resources"].get("GPU", 0.0),
             "head": "node:__internal_head__" in n["Resources"]} for i, n in enumerate(alive)]


def actor_table() -> dict[str, dict]:
    """Ray's GCS actor table (every actor of the cluster, dead ones too, with the node it ran on). Read
    through ``ray._private.state``: the public ``ray.util.state`` API needs the dashboard, which a
    simulated (or a locked-down) cluster may not run."""
    from ray._private import state

    return state.actors()


def placement(before: set[str], stage: str, nodes: list[dict]) -> list[dict]:
    """The stage's worker actors created since ``before`` (actor ids) and the node each ran on."""
    label = {n["node_id"]: n["node"] for n in nodes}
    out = []
    for actor_id, a in actor_table().items():
        if actor_id in before or WORKER_CLASS[stage] not in a.get("ActorClassName", ""):
            continue
        node_id = a.get("Address", {}).get("NodeID", "")
        out.append({"actor": a["ActorClassName"], "node": label.get(node_id, "unknown"), "node_id": node_id,
                    "ip": a.get("Address", {}).get("IPAddress"), "pid": a.get("Pid")})
    return sorted(out, key=lambda p: (p["node"], p["pid"] or 0))


# ----------------------------------------------------------------------------------------- results

def efficiencies(rows: list[dict]) -> None:
    """Fill ``efficiency`` = throughput(n) / (n x throughput(base)) x base, base = 1 worker (or the fewest
    measured), in place."""
    ok = [r for r in rows if r.get("throughput")]
    if not ok:
        return
    base = min(ok, key=lambda r: r["workers"])
    for r in ok:
        r["efficiency"] = r["throughput"] * base["workers"] / (r["workers"] * base["throughput"])
        r["efficiency_vs_workers"] = base["workers"]


def _clean(obj):
    """NaN/inf -> None (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in result["stage_order"] if s in result["stages"]]  # the ones measured so far
    cols = min(4, max(1, len(stages)))
    rows_n = math.ceil(len(stages) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.6 * cols, 3.0 * rows_n), squeeze=False)
    for ax, stage in zip(axes.flat, stages):
        rows = result["stages"][stage]
        ok = sorted((r for r in rows if r.get("throughput")), key=lambda r: r["workers"])
        ax.set_title(stage, fontsize=10)
        ax.set_xlabel("workers / actors")
        if ok:
            x = [r["workers"] for r in ok]
            base = ok[0]
            ax.plot(x, [r["throughput"] for r in ok], "o-", label="measured")
            ax.plot(x, [base["throughput"] * w / base["workers"] for w in x], "k--", lw=1, label="ideal")
            for r in ok:
                ax.annotate(f"{r['efficiency']:.2f}", (r["workers"], r["throughput"]), fontsize=8,
                            textcoords="offset points", xytext=(4, -10))
            ax.set_ylabel(ok[0]["unit"])
            ax.set_xticks(x)
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=7)
        errors = [r for r in rows if r.get("error")]
        if errors:
            ax.text(0.5, 0.5 if not ok else 0.15, "\n".join(f"{r['workers']} w: failed" for r in errors),
                    transform=ax.transAxes, ha="center", color="red", fontsize=8)
    for ax in list(axes.flat)[len(stages):]:
        ax.axis("off")
    c = result["cluster"]
    fig.suptitle(f"raygen scaling: {len(c['nodes'])} nodes ({c['mode']}), efficiency annotated "
                 f"(load avg {result['machine']['load_avg']['start'][0]:.1f} at start)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------- cluster

def connect(args):
    """Start the simulated cluster (returned, to shut down) or join ``--address``; None when joined."""
    import ray

    from raygen.ray_utils import init_ray, runtime_env, worker_env

    if args.address:
        init_ray(argparse.Namespace(address=args.address))
        return None
    # A private temp folder: Ray writes the cluster's address to <temp>/ray/ray_current_cluster, where any
    # other `ray.init()` on this machine would otherwise find (and join) the simulated cluster.
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rgscale", dir="/tmp")
    from ray.cluster_utils import Cluster

    node = {"num_cpus": args.cpus_per_node, "object_store_memory": args.object_store_mb * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    for _ in range(args.simulate_nodes - 1):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    os.environ.update(worker_env())  # the driver loads models too
    ray.init(address=cluster.address, runtime_env=runtime_env(dashboard=False), log_to_driver=args.verbose)
    return cluster


def run(args) -> dict:
    """The benchmark: every stage x worker count; writes ``args.out`` after each run; returns the result."""
    import ray
    import torch

    from raygen.precision import cpu_native_bf16

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise SystemExit(f"unknown stage(s) {bad}; choose from {', '.join(STAGES)}")
    workers = sorted({int(w) for w in args.workers.split(",")})
    root = Path(args.work).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="scaling-", dir=root))  # shared by every node (see --work)
    out, png = Path(args.out), Path(args.out).with_suffix(".png")
    t_start = time.perf_counter()
    cluster = connect(args)
    try:
        nodes = cluster_nodes()
        desc = ", ".join(f"{n['node']} {n['cpus']:g} CPU" for n in nodes)
        print(f"cluster: {len(nodes)} nodes ({desc}), {time.perf_counter() - t_start:.0f} s", flush=True)
        result = {
            "command": shlex.join(["python", "-m", "benchmarks.scaling", *args.argv]),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                        "ray": ray.__version__, "cpu_bf16_native": cpu_native_bf16(),
                        "cuda": torch.cuda.is_available(),
                        "load_avg": {"start": [round(x, 2) for x in os.getloadavg()]},
                        "note": args.note},
            "cluster": {"mode": (f"simulated: ray.cluster_utils.Cluster, {args.simulate_nodes} nodes x "
                                 f"{args.cpus_per_node} CPU on one machine") if cluster else f"joined {args.address}",
                        "nodes": nodes,
                        **({"note": "the simulated nodes share this machine's CPUs (and any other load on it): "
                                    "the multi-node code paths run, but the efficiencies are not a real cluster's"}
                           if cluster else {})},
            "settings": {k: v for k, v in vars(args).items() if k not in ("argv", "out", "note")},
            "measure": {stage: MEASURE["sft" if stage in SFT else stage] for stage in stages},
            "work": str(work),
            "stage_order": stages,
            "stages": {},
        }
        s = prepare(args, work)
        result["model"] = s.model_desc
        print(f"model and inputs ready in {work}, {time.perf_counter() - t_start:.0f} s", flush=True)
        for stage in stages:
            rows = result["stages"][stage] = []
            for n in workers:
                before = set(actor_table())
                t0 = time.perf_counter()
                try:
                    row = {"workers": n, **run_stage(s, stage, n)}
                except Exception as e:  # recorded, never hidden: the next stage still runs
                    traceback.print_exc()
                    row = {"workers": n, "error": f"{type(e).__name__}: {e}"[:3000]}
                row["seconds"] = round(time.perf_counter() - t0, 2)
                row["placement"] = placement(before, stage, nodes)
                row["nodes_used"] = sorted({p["node"] for p in row["placement"]})
                row["load_avg_1m"] = round(os.getloadavg()[0], 2)
                rows.append(row)
                efficiencies(rows)
                print(f"{stage:15s} {n} worker(s): "
                      + (f"{row['throughput']:10.2f} {row['unit']}, efficiency {row['efficiency']:.2f}"
                         if row.get("throughput") else f"ERROR {row.get('error', '')[:200]}")
                      + f"  on {', '.join(row['nodes_used']) or '?'} ({row['seconds']} s)", flush=True)
                result["machine"]["load_avg"]["end"] = [round(x, 2) for x in os.getloadavg()]
                write_result(out, _clean(result))
                plot(result, png)
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
            shutil.rmtree(os.environ.pop("RAY_TMPDIR"), ignore_errors=True)
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out} and {png}")
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--address", default="", help="join this Ray cluster ('auto' under ray job submit)")
    where.add_argument("--simulate-nodes", type=int, default=2,
                       help="start ray.cluster_utils.Cluster with N nodes on this machine (when no --address)")
    ap.add_argument("--cpus-per-node", type=int, default=1, help="CPUs of each simulated node")
    ap.add_argument("--object-store-mb", type=int, default=256, help="object store of each simulated node")
    ap.add_argument("--workers", default="1,2", help="worker / actor counts, comma-separated")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ", ".join(STAGES))
    ap.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs each worker / actor reserves")
    ap.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs each worker / actor reserves")
    ap.add_argument("--model", default="", help="an HF causal-LM folder (default: a tiny random Llama with "
                                                "SmolLM2's tokenizer)")
    ap.add_argument("--embed-model", default="all-MiniLM-L6-v2", help="corpus_embed's sentence embedder")
    ap.add_argument("--embed-batch-size", type=int, default=32)
    ap.add_argument("--items", type=int, default=512, help="corpus_embed: items")
    ap.add_argument("--teacher-items", type=int, default=64, help="corpus_teacher: items")
    ap.add_argument("--teacher-queries", type=int, default=5, help="corpus_teacher: search queries per item "
                                                                   "(0 = keywords only)")
    ap.add_argument("--examples", type=int, default=256, help="SFT: encoded examples (the data cycles)")
    ap.add_argument("--steps", type=int, default=10, help="SFT: optimizer steps (a checkpoint every steps // 2)")
    ap.add_argument("--batch-size", type=int, default=8, help="SFT: examples per worker per step")
    ap.add_argument("--prompts", type=int, default=32, help="eval and rollout: prompts")
    ap.add_argument("--catalog", type=int, default=256, help="eval and rollout: catalog items (distinct SIDs, <= 512)")
    ap.add_argument("--beam", type=int, default=5, help="eval: beam width")
    ap.add_argument("--group", type=int, default=4, help="rollout: rollouts per prompt")
    ap.add_argument("--rollout-mode", default="sample", choices=["beam", "sample"])
    ap.add_argument("--repeats", type=int, default=3, help="rollout: timed batches (the best counts)")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "raygen_scaling"),
                    help="a folder every node sees (shared file system on a real cluster)")
    ap.add_argument("--keep-work", action="store_true", help="keep the run's work folder (models, checkpoints)")
    ap.add_argument("--note", default="", help="a note on the machine's state, recorded in the JSON")
    ap.add_argument("--verbose", action="store_true", help="forward the workers' logs to this process")
    ap.add_argument("--out", required=True, help="the result file (JSON; committed results live in benchmarks/results/)")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.address:
        args.simulate_nodes = 0
    elif args.simulate_nodes < 1:
        ap.error("--simulate-nodes must be >= 1 (or give --address)")
    return args


def main(argv: list[str] | None = None) -> dict:
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
