"""What a failure costs: a Ray Train worker killed mid-SFT, the pipeline's driver killed mid-run, and
an evaluation, rollout or teacher actor killed mid-work.

Model: a tiny random Llama (2 layers, hidden 64) on SmolLM2-135M-Instruct's real tokenizer and chat
template (49k ids + the SID tokens), so checkpoints, prompts and the pipeline are the real ones and the
whole benchmark takes a few minutes on a laptop.

(a) worker fault: ``raygen.train.ray_trainer.train`` on 2 CPU workers (torch DDP), ``max_steps`` steps,
    a checkpoint every ``checkpoint_every``; rank 0 dies (``os._exit``) after step ``fault_at`` via
    ``RAYGEN_FAULT_AT_STEP``; Ray Train (``max_failures=1``) restarts the worker group from the last
    registered checkpoint. Compared with the same run without the fault: wall seconds lost, steps
    redone (fault step - resume step), and the final loss and weights (equal if the resume is exact).
(b) driver fault: ``python -m raygen run`` on a 40-item synthetic catalog, SIGKILLed once SFT's
    step-``kill_at`` checkpoint is being written; the same command is run again. Compared with an
    uninterrupted run: wall seconds lost, stages skipped / rerun, SFT steps redone (the rerun's SFT
    resumes from the killed run's Ray Train checkpoints) and the final eval metrics.

(c) actor faults (``raygen.faults``: the actor's process ``os._exit``\ s once, before answering):
    an evaluation actor on its generate call (constrained beam search over 2 actors), a rollout actor on
    its 2nd generate call of a GRPO run (2 rollout actors, weights synced every step), and a corpus
    teacher (keyword) actor on its 3rd batch (Ray Data, 2 actors). Each against the same work without the
    fault: rows in / rows out, whether the outputs (or the final policy) are equal, seconds.

    .venv/bin/python -m benchmarks.fault_tolerance            # all parts -> benchmarks/results/fault_tolerance.json
    .venv/bin/python -m benchmarks.fault_tolerance --part a
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from raygen.io import read_json  # noqa: E402
from raygen.provenance import write_result  # noqa: E402
from benchmarks._tiny import catalog, examples as tiny_examples, items as tiny_items, prompts as tiny_prompts, \
    tiny_model, with_sid_tokens  # noqa: E402


# ------------------------------------------------------------------------------- (a) worker fault

def _weights_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def worker_fault(work: Path, args) -> dict:
    import ray

    from raygen.configbase import Resources
    from raygen.ray_utils import init_ray
    from raygen.train import TrainConfig, train
    from raygen.faults import MARKER as FAULT_MARKER, site_var

    FAULT_AT_STEP = site_var("AT_STEP")

    base, tok, sid_ids = with_sid_tokens(tiny_model(work / "a_base"), work / "a_base")
    examples = tiny_examples(tok, 256)
    cfg = TrainConfig(mode="full", resources=Resources(count=2), deepspeed=False, batch_size=4, max_steps=args.steps,
                      lr=1e-3, checkpoint_every=args.checkpoint_every, keep_checkpoints=2, log_every=1, max_failures=1,
                      max_len=256)
    init_ray(argparse.Namespace(address="", num_cpus=args.cpus, dashboard=False))
    runs = {}
    for name in ("clean", "fault"):
        if name == "fault":
            os.environ[FAULT_AT_STEP] = str(args.fault_at)
            os.environ[FAULT_MARKER] = str(work / "a_fault.marker")
        t0 = time.time()
        r = train(base, examples, sid_ids, cfg, work / f"a_{name}", work / "a_ray", resume=False, name=name)
        runs[name] = {"wall_s": round(time.time() - t0, 2), "start_step": r["start_step"],
                      "final_step": r["final_step"], "loss": r["loss"], "setup_seconds": r["setup_seconds"],
                      "train_seconds": r["train_seconds"]}
        os.environ.pop(FAULT_AT_STEP, None)
    ray.shutdown()
    clean, fault = runs["clean"], runs["fault"]
    diff = _weights_diff(work / "a_clean" / "model", work / "a_fault" / "model")
    return {
        "settings": {"num_workers": 2, "backend": "torch DDP (gloo)", "mode": "full", "max_steps": args.steps,
                     "checkpoint_every": args.checkpoint_every, "fault_after_step": args.fault_at,
                     "max_failures": 1, "examples": len(examples)},
        "clean": clean, "fault": fault,
        "resumed_from_step": fault["start_step"],
        "steps_redone": args.fault_at - fault["start_step"],
        "seconds_lost": round(fault["wall_s"] - clean["wall_s"], 2),
        "final_loss_abs_diff": abs(fault["loss"] - clean["loss"]),
        "final_weights_max_abs_diff": diff,
    }


# ------------------------------------------------------------------------------- (b) driver fault

def pipeline_config(run_dir: Path, model: Path, args) -> dict:
    return {
        "run_dir": str(run_dir),
        "ray": {"num_cpus": args.cpus},
        "data": {"source": "synthetic", "synthetic": {"n_items": 40, "n_users": 30, "n_categories": 4,
                                                      "n_tastes": 3, "min_seq_len": 4, "max_seq_len": 6}},
        "corpus": {"keyword_backend": "fallback"},
        "sids": {"method": "rqkmeans", "levels": 2, "codebook_size": 8, "kmeans_iters": 10},
        "lm": {"model": str(model), "init": "mean"},
        "align": {"enabled": False},
        "sft": {"mode": "full", "resources": {"count": 1}, "deepspeed": False, "batch_size": 4,
                "max_steps": args.sft_steps, "checkpoint_every": 2, "log_every": 1, "max_len": 256},
        "rl": {"enabled": False},
        "eval": {"splits": ["test"], "resources": {"count": 0}, "baselines": ["popularity"], "beam_width": 5,
                 "ks": [1, 5]},
    }


def _run(config: Path, log: Path, kill_when=None) -> tuple[float, int | None, dict | None, int]:
    """Run the pipeline in a new session; with ``kill_when`` SIGKILL the driver once that returns True.

    Returns (seconds, exit code, stage status, process group id)."""
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "raygen", "run", "--config", str(config)], cwd=ROOT,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    if kill_when is None:
        rc = proc.wait()
        text = log.read_text()
        status = json.loads(text[text.rindex("{\n"):]) if rc == 0 else None
        return time.time() - t0, rc, status, proc.pid
    while not kill_when():
        if proc.poll() is not None:
            raise RuntimeError(f"pipeline ended before the kill point:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # the driver only: its local Ray is left to notice on its own
    proc.wait()
    return time.time() - t0, None, None, proc.pid


def _reap_group(pgid: int, grace_s: float = 10.0) -> bool:
    """Whether processes of the killed driver's session (its local Ray) outlived it by ``grace_s``;
    those are then killed, as a node's clean-up would."""
    deadline = time.time() + grace_s
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.5)
    os.killpg(pgid, signal.SIGKILL)
    return True


def driver_fault(work: Path, args) -> dict:
    import yaml

    model = tiny_model(work / "b_model")
    out = {}
    for name in ("clean", "killed"):
        run_dir = work / f"b_{name}"
        config = work / f"b_{name}.yaml"
        config.write_text(yaml.safe_dump(pipeline_config(run_dir, model, args)))
        if name == "clean":
            wall, rc, status, _ = _run(config, work / "b_clean.log")
            assert rc == 0, (work / "b_clean.log").read_text()[-3000:]
            out["clean"] = {"wall_s": round(wall, 2), "status": status,
                            "stage_seconds": {s: read_json(run_dir / s / "metrics.json")["seconds"] for s in status}}
            continue
        ckpt = f"sft-*/step_{args.kill_at:07d}"
        kill_s, _, _, pgid = _run(config, work / "b_killed1.log",
                                  kill_when=lambda: any((run_dir / "ray_train").glob(ckpt)))
        finished = sorted(p.parent.name for p in run_dir.glob("*/_SUCCESS"))
        half = sorted(p.name for p in run_dir.iterdir() if p.name.startswith("."))
        left = _reap_group(pgid)
        wall, rc, status, _ = _run(config, work / "b_killed2.log")
        assert rc == 0, (work / "b_killed2.log").read_text()[-3000:]
        sft = read_json(run_dir / "sft" / "metrics.json")
        out["killed"] = {"killed_after_s": round(kill_s, 2), "finished_at_kill": finished,
                         "ray_processes_outlived_driver_10s": left,
                         "hidden_work_folders_at_kill": half, "rerun_wall_s": round(wall, 2), "rerun_status": status,
                         "rerun_sft_start_step": sft["start_step"], "rerun_sft_final_step": sft["final_step"],
                         "left_behind_after_rerun": sorted(p.name for p in run_dir.iterdir()
                                                           if p.name.startswith("."))}
    clean_eval = read_json(work / "b_clean" / "eval" / "metrics.json")["table"]
    killed_eval = read_json(work / "b_killed" / "eval" / "metrics.json")["table"]
    k = out["killed"]
    return {
        "settings": {"catalog_items": 40, "sft_steps": args.sft_steps, "sft_checkpoint_every": 2,
                     "killed_when": f"SFT's step-{args.kill_at} checkpoint appeared in storage"},
        **out,
        "stages_skipped_on_rerun": [s for s, v in k["rerun_status"].items() if v == "skipped"],
        "sft_steps_redone": args.kill_at - k["rerun_sft_start_step"],
        "seconds_lost": round(k["killed_after_s"] + k["rerun_wall_s"] - out["clean"]["wall_s"], 2),
        "eval_clean": clean_eval, "eval_after_kill_and_rerun": killed_eval,
        "eval_equal": clean_eval == killed_eval,
    }


# ------------------------------------------------------------------------------- (c) actor faults

class _Fault:
    """``RAYGEN_FAULT_<site>=n`` with a fresh marker while the block runs (actors started inside get it)."""

    def __init__(self, work: Path, part: str, site: str | None, n: int = 1):
        self.work, self.part, self.site, self.n = work, part, site, n

    def __enter__(self):
        from raygen.faults import MARKER, site_var

        if self.site:
            self.marker = self.work / f"c_{self.part}.marker"
            self.marker.unlink(missing_ok=True)
            os.environ[site_var(self.site)], os.environ[MARKER] = str(self.n), str(self.marker)
        self.t0 = time.time()
        return self

    def __exit__(self, *exc):
        from raygen.faults import MARKER, site_var

        self.seconds = round(time.time() - self.t0, 2)
        if self.site:
            os.environ.pop(site_var(self.site)), os.environ.pop(MARKER)
            self.died = self.marker.exists()


def _tiny_catalog(work: Path):
    """The tiny model with SID tokens, 48 distinct catalog SIDs, prompts and targets (catalog rows)."""
    import numpy as np

    base, tok, sid_ids = with_sid_tokens(tiny_model(work / "c_base"), work / "c_base")
    rng = np.random.default_rng(0)
    sid = catalog(sid_ids, rng, 48)
    prompts = tiny_prompts(tok, 40)  # the chat prompt, no answer
    return base, tok, sid, prompts, rng.integers(0, 48, len(prompts)).tolist()


def actor_faults(work: Path, args) -> dict:
    import ray
    import torch

    from raygen.configbase import Resources, from_dict
    from raygen.corpus.config import CorpusConfig
    from raygen.corpus.ray_layer import keyword_items
    from raygen.eval.ray_layer import evaluate_distributed
    from raygen.ray_utils import init_ray
    from raygen.rl.config import RlConfig
    from raygen.rl.loop import run_grpo

    base, tok, sid, prompts, targets = _tiny_catalog(work)
    init_ray(argparse.Namespace(address="", num_cpus=args.cpus, dashboard=False))
    out = {}

    ev = {}
    for name, site in (("clean", None), ("fault", "GENERATE_CALL")):
        with _Fault(work, "eval", site) as f:
            items, scores = evaluate_distributed(str(base), prompts, torch.as_tensor(sid), 5, tok.pad_token_id, 8,
                                                 resources=Resources(count=2, cpus=1))
        ev[name] = (items, f)
    out["eval_actor"] = {"settings": "constrained beam search (beam 5) of 40 prompts on 2 actors; one actor "
                                     "dies on its generate call", "rows_in": len(prompts),
                         "rows_out": int(ev["fault"][0].shape[0]), "actor_died": ev["fault"][1].died,
                         "outputs_equal_clean": bool(torch.equal(ev["clean"][0], ev["fault"][0])),
                         "seconds_clean": ev["clean"][1].seconds, "seconds_fault": ev["fault"][1].seconds}

    rl = {}
    for name, site in (("clean", None), ("fault", "GENERATE_CALL")):
        cfg = from_dict(RlConfig, dict(group_size=4, rollout_batch=8, steps=args.rl_steps, lr=5e-3, kl_beta=0.05,
                                       rollout_resources={"count": 2, "cpus": 0.5}, rollout_mode="sample",
                                       checkpoint_every=0, rewards={"rule": 1.0, "prefix": 0.5}))
        with _Fault(work, "rl", site, n=2) as f:
            r = run_grpo(str(base), prompts, targets, sid, None, cfg, str(work / f"c_rl_{name}"),
                         pad_id=tok.pad_token_id, verify_sync=True)
        rl[name] = (r, f)
    (clean, fc), (fault, ff) = rl["clean"], rl["fault"]
    out["rollout_actor"] = {
        "settings": f"GRPO, {args.rl_steps} steps, 2 rollout actors (sample mode, group 4, 8 prompts a step), "
                    "weights synced every step; one actor dies on its 2nd generate call (step 2's rollout)",
        "actor_died": ff.died, "recoveries": fault["rollout_actor_recoveries"],
        "steps_clean": len(clean["history"]), "steps_fault": len(fault["history"]),
        "final_policy_equal_clean": clean["learner_checksum"] == fault["learner_checksum"],
        "actors_hold_final_policy": fault["actor_checksums"] == [fault["learner_checksum"]] * 2,
        "seconds_clean": fc.seconds, "seconds_fault": ff.seconds}

    items = tiny_items(args.teacher_items)
    ccfg = CorpusConfig(keyword_backend="fallback", keyword_batch_size=8, n_keywords=3, n_queries=5,
                        keyword_resources=Resources(count=2, cpus=1))
    kw = {}
    for name, site in (("clean", None), ("fault", "TEACHER_BATCH")):
        with _Fault(work, "teacher", site, n=3) as f:
            kw[name] = (keyword_items(items, ccfg), f)
    got = kw["fault"][0]
    out["teacher_actor"] = {
        "settings": f"keyword + query pass over {items.num_rows} items, batches of 8, 2 actors (fallback backend: "
                    "the actor machinery without a model); one actor dies on its 3rd batch",
        "rows_in": items.num_rows, "rows_out": got.num_rows, "actor_died": kw["fault"][1].died,
        "distinct_item_ids_out": len(set(got.column("item_id").to_pylist())),
        "outputs_equal_clean": got.equals(kw["clean"][0]),
        "seconds_clean": kw["clean"][1].seconds, "seconds_fault": kw["fault"][1].seconds}
    ray.shutdown()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["a", "b", "c", "all"], default="all")
    p.add_argument("--steps", type=int, default=20, help="(a) training steps")
    p.add_argument("--checkpoint-every", type=int, default=5, help="(a) checkpoint interval")
    p.add_argument("--fault-at", type=int, default=13, help="(a) rank 0 dies after this step")
    p.add_argument("--sft-steps", type=int, default=16, help="(b) SFT steps of the pipeline")
    p.add_argument("--kill-at", type=int, default=6, help="(b) kill the driver when this SFT checkpoint appears")
    p.add_argument("--rl-steps", type=int, default=4, help="(c) GRPO steps")
    p.add_argument("--teacher-items", type=int, default=200, help="(c) items of the keyword pass")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    p.add_argument("--work", default="/tmp/raygen_fault_bench", help="scratch folder (emptied first)")
    p.add_argument("--out", required=True, help="the result file (JSON; committed results live in benchmarks/results/)")
    args = p.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})

    import torch
    import ray

    # parts not run this time keep their figures (and the command that made them) from the file
    old = read_json(args.out) if Path(args.out).exists() else {}
    command = "python -m benchmarks.fault_tolerance " + " ".join(sys.argv[1:])
    result = {k: old[k] for k in ("worker_fault", "driver_fault", "actor_faults") if k in old}
    result["commands"] = {**old.get("commands", {}), args.part: command}
    result |= {"command": command,
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                           "ray": ray.__version__}}
    t0 = time.time()
    if args.part in ("a", "all"):
        result["worker_fault"] = worker_fault(work, args)
        print(json.dumps(result["worker_fault"], indent=1), flush=True)
    if args.part in ("b", "all"):
        result["driver_fault"] = driver_fault(work, args)
        print(json.dumps(result["driver_fault"], indent=1), flush=True)
    if args.part in ("c", "all"):
        result["actor_faults"] = actor_faults(work, args)
        print(json.dumps(result["actor_faults"], indent=1), flush=True)
    result["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    result["total_seconds"] = round(time.time() - t0, 1)
    write_result(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
