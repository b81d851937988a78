"""GRPO after a kept SFT model of benchmarks/quality_local.py, on the full Industrial test split: does RL
improve the recommender? One process, no Ray (the rollouts in-process, :func:`raygen.rl.loop.run_grpo`).

    python -m benchmarks.rl_local --run runs/industrial --sft runs/q7/models/star-s2 \\
        --sft-runs-dir benchmarks/results/quality_industrial_runs --out benchmarks/results/rl_industrial.json \\
        --rewards rule=1,ranking=0.5 rule=1,prefix=1 --seeds 0,1,2 --steps 100 --rollout-batch 16 --group 8

For each reward mix (``--rewards``: ``name=weight,...`` of :mod:`raygen.rl.rewards`, ``prefix`` being the
token-level semantic reward) x RL seed: GRPO from ``--sft`` on the train split's prompts (sequence format, as
the SFT model was trained; SID-only policy, ``rl.sid_only_head``; with ``--rl-holdout-share`` on the positions
an SFT model trained with the same option never saw: :mod:`raygen.tasks.holdout`), valid NDCG@10 on ``--valid-rows`` valid
rows every ``--eval-every`` steps (the learning curve), then the final policy scored on every test row with the
same constrained beam search as quality_local.py. "before" is the SFT model's own kept test scoring (the
``--sft-runs-dir`` file of the same name: the same rows), so the paired differences are exact. Reported per
mix: test metrics after RL (mean ± std over seeds, bootstrap CI over rows), the paired NDCG@10 difference to
the SFT model, the same for the keep-best choice (the RL policy only where it raised valid NDCG@10, else the
SFT model: what the pipeline's ``rl.keep_best`` hands on), the share of groups with reward variance,
collapse statistics. Each finished run is kept (compressed) in ``--runs-dir`` and reused on a rerun with the
same settings. Writes ``<out>.json``, ``.md`` and ``.png`` (valid NDCG@10 against RL steps).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.quality import cell, paired_diff, summarize  # noqa: E402
from benchmarks.quality_local import (Data, command, data_digest, load_run, machine, save_run, score_split,  # noqa: E402
                           write_outputs)

from raygen.cli import setup_logging  # noqa: E402
from raygen.configbase import from_dict  # noqa: E402
from raygen.eval.metrics import collapse_stats  # noqa: E402
from raygen.eval.rows import Catalog, split_rows  # noqa: E402
from raygen.lm.vocab import pad_id_of  # noqa: E402
from raygen.precision import resolve_bf16  # noqa: E402
from raygen.rl.config import RlConfig  # noqa: E402
from raygen.tasks.holdout import rl_prompt_rows  # noqa: E402
from raygen.rl.rewards import registered_rewards  # noqa: E402
from raygen.rl.stage import item_embeddings  # noqa: E402
from raygen.tasks.config import TasksConfig  # noqa: E402

METRICS = ["hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10"]
CONTROL = "sft-control"  # the --sft-control row's name


def parse_rewards(spec: str) -> dict[str, float]:
    """``"rule=1,prefix=0.5"`` -> ``{"rule": 1.0, "prefix": 0.5}``; an unknown reward or a bad weight is an error
    naming the spec."""
    out = {}
    for part in spec.split(","):
        name, _, w = part.partition("=")
        if name not in registered_rewards():
            raise SystemExit(f"--rewards {spec!r}: unknown reward {name!r}; choose from {registered_rewards()}")
        try:
            out[name] = float(w)
        except ValueError:
            raise SystemExit(f"--rewards {spec!r}: weight of {name!r} is not a number: {w!r}") from None
    return out


def mix_name(rewards: dict[str, float], sft_coef: float = 0.0) -> str:
    """A GRPO arm's row name: its rewards, plus ``+sft<coef>`` when the loss has rl.sft_coef's supervised term."""
    return "+".join(f"{k}{v:g}" for k, v in rewards.items()) + (f"+sft{sft_coef:g}" if sft_coef else "")


def rl_config(a, rewards: dict[str, float], seed: int, sft_coef: float = 0.0) -> RlConfig:
    return from_dict(RlConfig, {"sft_coef": sft_coef,
        "steps": a.steps, "rollout_batch": a.rollout_batch, "group_size": a.group, "lr": a.lr, "kl_beta": a.kl,
        "rollout_mode": a.mode, "temperature": a.temperature, "rewards": rewards, "seed": seed,
        "signal_rounds": a.signal_rounds, "target_in_group": a.target_in_group,
        "max_train_rows": a.max_train_rows, "eval_every": a.eval_every, "eval_beam": 10, "micro_batch": a.micro_batch,
        "checkpoint_every": a.checkpoint_every, "keep_checkpoints": 1, "rollout_resources": {"count": 0},
        "keep_best": True})


def rows_key(row_ids: np.ndarray, targets: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(row_ids, np.int64).tobytes() + np.asarray(targets, np.int64).tobytes()).hexdigest()


def sft_before(a, d: Data, tok, catalog, bf16: bool) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """The SFT model's test scoring: its quality_local run file (same rows, no rescoring) when there is one,
    else scored here and kept in ``--runs-dir``: ``(per-row metrics, topk, row_ids, targets)``."""
    kept = Path(a.sft_runs_dir) / f"{Path(a.sft).name}.npz" if a.sft_runs_dir else None
    digest = data_digest(d)
    if kept is not None and kept.exists():
        z = np.load(kept, allow_pickle=False)
        if json.loads(str(z["fingerprint"])).get("data_digest") == digest:
            r = {k.split(":", 1)[1]: z[k] for k in z.files if k.startswith("metric:")}
            print(f"[rl] SFT test scoring from {kept} (ndcg@10 {r['ndcg@10'].mean():.4f})", flush=True)
            return r, z["topk"], z["row_ids"], z["targets"]
        print(f"[rl] {kept} was made on other data or SIDs (or before runs recorded them): the SFT model is "
              "scored here", flush=True)
    # the model's weights and the data are the key: a model retrained into the same folder is scored again
    path, key = Path(a.runs_dir) / "sft_test.npz", json.dumps({"model": weights_digest(a.sft), "data": digest})
    got = load_run(path, key)
    if got is not None:
        return got[1], got[2], got[3], got[4]
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(a.sft, dtype=torch.float32).eval()
    r, topk, rows = score_split(d, lm, tok, catalog, bf16, a, "test", a.test_rows)
    save_run(path, key, {}, r, topk, rows.row_ids, rows.targets, [])
    return r, topk, rows.row_ids, rows.targets


def weights_digest(model_dir: str | Path) -> str:
    """SHA-256 of a saved model's weight files (safetensors)."""
    h = hashlib.sha256()
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors weights")
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def valid_ndcg(a, d: Data, lm, tok, catalog, bf16: bool) -> float:
    r, _, _ = score_split(d, lm, tok, catalog, bf16, a, "valid", a.valid_rows)
    return float(r["ndcg@10"].mean())


def control_model(a, tok, catalog, task, seed: int):
    """``--sft-control``: the RL rows' control, supervised instead of reinforced. From the same SFT model, on
    the same prompts in the same order (:func:`raygen.rl.loop.batch_indices` with the RL seed), the same
    number of steps and prompts per step, the same trainable weights, optimizer (AdamW, constant lr
    ``--lr``, no weight decay) and gradient clip as GRPO's learner: cross-entropy on the sequence
    ``prompt + the target's SID tokens`` (what GRPO trains on when it rewards the target; SID-only head).
    Whatever GRPO gains over this comes from its objective, not from the prompts' targets."""
    from transformers import AutoModelForCausalLM

    from raygen.rl.loop import batch_indices
    from raygen.train.collate import pad_collate
    from raygen.train.engine import adamw
    from raygen.train.loss import LossModule
    from raygen.train.masks import prepare_trainable

    sid = np.asarray(catalog.sid_matrix)
    sid_ids = sorted({int(t) for t in sid.reshape(-1)})
    examples = [{"input_ids": list(p) + sid[t].tolist(), "labels": [-100] * len(p) + sid[t].tolist()}
                for p, t in zip(task["train_prompts"], task["train_targets"])]
    lm = AutoModelForCausalLM.from_pretrained(a.sft, dtype=torch.float32)
    lm, groups = prepare_trainable(lm, "full", sid_ids, weight_decay=0.0)
    lm.eval()  # as GRPO's learner: no dropout
    module = LossModule(lm, logits="sid", sid_ids=sid_ids, extra_ids=[tok.eos_token_id])
    optimizer = adamw(groups, a.lr)
    params = [p for g in groups for p in g["params"]]
    for step in range(a.steps):
        idx = batch_indices(len(examples), min(a.rollout_batch, len(examples)), step, seed)
        batch = pad_collate([examples[i] for i in idx], pad_id_of(tok), 4096)
        optimizer.zero_grad(set_to_none=True)
        module(batch["input_ids"], batch["labels"])["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    return lm.eval()


def grpo_model(a, tok, catalog, task, rewards: dict, seed: int, key: str, sft_coef: float = 0.0) -> tuple:
    """GRPO with one reward mix and seed: ``(final policy, record fields, valid curve, work folder)``."""
    from transformers import AutoModelForCausalLM

    from raygen.rl.loop import run_grpo

    # one folder per run and settings: GRPO checkpoints there every --checkpoint-every steps, and a run cut
    # short (a session's end) resumes from its newest checkpoint when the same command runs again
    work = Path(a.work_dir) / f"{mix_name(rewards, sft_coef)}-s{seed}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
    summary = run_grpo(a.sft, task["train_prompts"], task["train_targets"], catalog.sid_matrix, task["emb"],
                       rl_config(a, rewards, seed, sft_coef), str(work), pad_id=pad_id_of(tok),
                       eval_prompts=task["valid_prompts"],
                       eval_targets=task["valid_targets"])  # rollouts: rl.rollout_bf16 'auto', as the stage
    lm = AutoModelForCausalLM.from_pretrained(summary["model_dir"], dtype=torch.float32).eval()
    hist = summary.get("history", [])
    fields = {"reward_mean_first": hist[0]["reward_mean"] if hist else None,
              "reward_mean_last": hist[-1]["reward_mean"] if hist else None,
              "groups_with_signal": float(np.mean([h["groups_with_signal"] for h in hist])) if hist else None,
              "hit_rate_mean": float(np.mean([h["hit_rate"] for h in hist])) if hist else None,
              **({"sft_nll_first": hist[0]["sft_nll"], "sft_nll_last": hist[-1]["sft_nll"]}
                 if hist and "sft_nll" in hist[0] else {}),
              "resumed_from_step": summary.get("resumed_from")}
    curve = [{"step": h["step"], "valid_ndcg@10": h["eval_ndcg@10"], "reward_mean": h["reward_mean"]}
             for h in hist if "eval_ndcg@10" in h]
    return lm, fields, curve, work


def one_run(a, d: Data, tok, catalog, task, rewards: dict | None, seed: int, bf16: bool,
            valid_before: float, key: str = "", sft_coef: float = 0.0) -> tuple:
    """GRPO with one reward mix and seed (``rewards`` None: the supervised control, :func:`control_model`),
    then valid and test scoring of the final policy: ``(record, per-row test metrics, topk, rows, curve)``."""
    t0 = time.time()
    if rewards is None:
        lm, fields, curve, work = control_model(a, tok, catalog, task, seed), {"groups_with_signal": None}, [], None
    else:
        lm, fields, curve, work = grpo_model(a, tok, catalog, task, rewards, seed, key, sft_coef)
    train_s = time.time() - t0
    v_after = valid_ndcg(a, d, lm, tok, catalog, bf16)
    r, topk, rows = score_split(d, lm, tok, catalog, bf16, a, "test", a.test_rows)
    del lm
    if work is not None:
        shutil.rmtree(work / "checkpoints", ignore_errors=True)  # spent: the run is about to be kept
        if not a.keep_models:
            shutil.rmtree(work / "model", ignore_errors=True)
    rec = {"seed": seed, "rewards": rewards, **{m: float(r[m].mean()) for m in METRICS},
           "valid_ndcg@10_before": valid_before, "valid_ndcg@10_after": v_after,
           "handed_on": "rl" if v_after >= valid_before else "sft",
           "collapse": collapse_stats(topk, len(catalog.item_ids)), **fields,
           "rl_seconds": round(train_s, 1), "eval_seconds": round(time.time() - t0 - train_s, 1)}
    return rec, r, topk, rows, curve


def signal_note(settings: dict) -> str:
    rounds = settings.get("signal_rounds", 1)
    note = ""
    if rounds > 1:
        note = f"; dynamic sampling: groups with reward variance only, up to {rounds} rounds of prompts"
    if settings.get("target_in_group"):
        note += "; the target put in place of the last candidate of a group that missed it"
    return note


def prompt_source(settings: dict) -> str:
    share = settings.get("rl_holdout_share")
    if not share:
        return f"the train split's {settings['train_prompts']} positions (the SFT model's own training targets)"
    return (f"{settings['train_prompts']} held-out positions (the last train target of {share:.0%} of the users, "
            f"withheld from SFT: quality_local.py --rl-holdout-share {share:g})")


def markdown(res: dict) -> str:
    st = res["settings"]
    split = "full test split" if not st["test_rows"] else "test rows (a subset: --test-rows)"
    lines = [f"# GRPO after SFT on `{st['run']}`: {split} ({st['test_rows_used']} rows)", "",
             f"SFT model `{st['sft']}` (test NDCG@10 {res['sft']['ndcg@10']:.4f}, valid NDCG@10 on "
             f"{st['valid_rows']} valid rows {res['sft']['valid_ndcg@10']:.4f}). Prompts: {prompt_source(st)}. "
             f"GRPO {st['steps']} steps x "
             f"{st['rollout_batch']} prompts x group {st['group']} ({st['mode']} rollouts{signal_note(st)}), "
             f"lr {st['lr']}, KL "
             f"{st['kl']}, SID-only policy, {st['precision']}. Mean ± std over RL seeds (– : one seed); [95 % bootstrap CI over rows].",
             "", "| reward mix | NDCG@10 after RL | HR@10 after RL | vs SFT (paired NDCG@10) | keep-best vs SFT | "
             "valid before -> after | groups with signal | distinct top-1 | seeds |", "|---|---|---|---|---|---|---|---|---|"]
    for name, m in res["mixes"].items():
        s = m["summary"]
        runs = m["runs"]
        cells = [cell(s[k]) for k in ("ndcg@10", "hr@10")]
        for key in ("vs_sft", "keep_best_vs_sft"):
            d = m[key]
            cells.append(f"{d['diff']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]")
        cells.append(", ".join(f"{x['valid_ndcg@10_before']:.4f} -> {x['valid_ndcg@10_after']:.4f}" for x in runs))
        cells.append(", ".join("-" if x["groups_with_signal"] is None else f"{x['groups_with_signal']:.2f}"
                               for x in runs))
        cells.append(", ".join(str(x["collapse"]["distinct_top1"]) for x in runs))
        cells.append(",".join(str(x["seed"]) for x in runs))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    paired = [(n, m["vs_control"]) for n, m in res["mixes"].items() if "vs_control" in m]
    if paired:
        lines += ["", f"Against the supervised control ({CONTROL}), paired on the same test rows and the seeds both have "
                  "(what the GRPO objective adds to a supervised pass): " + "; ".join(
                      f"{n} {d['diff']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] (seeds "
                      f"{','.join(map(str, d['seeds']))})" for n, d in paired) + "."]
    coefs = sorted({m["sft_coef"] for m in res["mixes"].values() if m.get("sft_coef")})
    if coefs:
        lines += ["", "Rows named `+sft<c>`: GRPO with rl.sft_coef = c, i.e. c x the token-mean cross-entropy of each "
                  "drawn prompt's target SID added to the GRPO loss (PPO-ptx; the supervised control's loss on the "
                  "same prompts, next to the rewards)."]
    if res.get("missing_runs"):
        lines += ["", "Not run yet (missing from the table): " + ", ".join(res["missing_runs"]) + "."]
    lines += ["", f"SFT model: distinct top-1 {res['sft']['collapse']['distinct_top1']}. Wall time "
              f"{res['wall_min']} min on {res['machine']['cpus']} CPU cores. Command: `{res['command']}`", ""]
    return "\n".join(lines)


def plot(res: dict, stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (name, m), color in zip(res["mixes"].items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        for i, curve in enumerate(m["curves"]):
            if curve:
                ax.plot([0] + [c["step"] for c in curve], [res["sft"]["valid_ndcg@10"]] +
                        [c["valid_ndcg@10"] for c in curve], color=color, alpha=0.8, label=name if i == 0 else None)
    ax.axhline(res["sft"]["valid_ndcg@10"], color="gray", ls="--", label="SFT model")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("valid NDCG@10")
    ax.legend()
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="the run folder the SFT model was trained on (data, sids, corpus)")
    ap.add_argument("--sft", required=True, help="a quality_local.py --save-models folder (model + tokenizer)")
    ap.add_argument("--sft-runs-dir", default="", help="quality_local.py's runs folder: the SFT model's kept "
                    "test scoring <sft-runs-dir>/<sft folder name>.npz (else the SFT model is scored here)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs-dir", default="", help="kept RL runs (default: <out stem>_runs beside --out)")
    ap.add_argument("--work-dir", default=str(ROOT / "runs/rl_local"), help="GRPO working folders (checkpoints)")
    ap.add_argument("--rewards", nargs="+", default=["rule=1,ranking=0.5"], help="reward mixes, name=weight,...")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rollout-batch", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--kl", type=float, default=0.04)
    ap.add_argument("--mode", choices=["beam", "sample"], default="beam")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--micro-batch", type=int, default=32)
    ap.add_argument("--signal-rounds", type=int, default=1,
                    help="rl.signal_rounds: > 1 trains only on groups with reward variance, drawing up to this many "
                         "rounds of prompts per step (DAPO's dynamic sampling); 1 = plain GRPO")
    ap.add_argument("--target-in-group", action="store_true",
                    help="rl.target_in_group: a group that misses its target gets it in place of its last candidate "
                         "(off-policy guidance)")
    ap.add_argument("--sft-control", action="store_true",
                    help=f"add the row {CONTROL!r}: the same steps, prompts, optimizer and lr with plain SFT on the "
                         "prompts' targets instead of GRPO (what RL must beat to show its objective helps)")
    ap.add_argument("--sft-coefs", type=float, nargs="+", default=[0.0],
                    help="rl.sft_coef of the GRPO rows: each reward mix runs once per value (0 = plain GRPO; > 0 adds "
                         "that weight x the targets' cross-entropy to the GRPO loss, rows named '<mix>+sft<coef>')")
    ap.add_argument("--max-train-rows", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=25, help="valid NDCG@10 every N RL steps (0 = only at the end)")
    ap.add_argument("--valid-rows", type=int, default=1000)
    ap.add_argument("--test-rows", type=int, default=0, help="0 = the full test split (smoke tests only: fewer)")
    ap.add_argument("--max-history", type=int, default=10)
    ap.add_argument("--eval-batch", type=int, default=512)
    ap.add_argument("--checkpoint-every", type=int, default=25,
                    help="GRPO checkpoints every N steps in --work-dir (removed once the run is kept); the same "
                         "command resumes a run cut short from its newest one (0 = none)")
    ap.add_argument("--keep-models", action="store_true", help="keep each final RL policy in --work-dir")
    ap.add_argument("--finished-only", action="store_true",
                    help="report the kept runs with these settings only (no training); the others are listed as missing")
    ap.add_argument("--rl-holdout-share", type=float, default=0.0,
                    help="prompts from the train targets an SFT model of quality_local.py --rl-holdout-share (the "
                         "same share) never trained on (split 'rl') instead of the train split")
    a = ap.parse_args()
    a.runs_dir = a.runs_dir or str(Path(a.out).with_suffix("")) + "_runs"
    mixes = [parse_rewards(s) for s in a.rewards]
    seeds = [int(s) for s in a.seeds.split(",")]
    setup_logging(False)
    t0 = time.time()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = Data(Path(a.run))
    tok = AutoTokenizer.from_pretrained(a.sft)
    catalog = Catalog.from_codes(d.codes, tok)
    index = catalog.index_of()
    bf16, reason = resolve_bf16("auto", "cuda" if torch.cuda.is_available() else "cpu")
    tasks = TasksConfig(seqrec_format="sequence", max_history=a.max_history, rl_holdout_share=a.rl_holdout_share)
    prompt_samples, prompt_split = rl_prompt_rows(d.samples, tasks)  # valid and test rows are the same either way
    train = split_rows(prompt_samples, d.codes, tok, tasks, prompt_split, a.max_train_rows, 0)
    valid = split_rows(d.samples, d.codes, tok, tasks, "valid", a.valid_rows, 0)
    emb = (item_embeddings(Path(a.run) / "corpus/embeddings.parquet", catalog.item_ids)
           if any(m.get("semantic") for m in mixes) else None)
    task = {"train_prompts": train.prompt_ids, "train_targets": [index[int(t)] for t in train.targets],
            "valid_prompts": valid.prompt_ids, "valid_targets": [index[int(t)] for t in valid.targets], "emb": emb}

    before, before_topk, row_ids, targets = sft_before(a, d, tok, catalog, bf16)
    sft_lm = AutoModelForCausalLM.from_pretrained(a.sft, dtype=torch.float32).eval()
    valid_before = valid_ndcg(a, d, sft_lm, tok, catalog, bf16)
    del sft_lm
    print(f"[rl] SFT valid ndcg@10 {valid_before:.4f} on {len(valid.targets)} rows; {len(train.targets)} prompts "
          f"(split {prompt_split!r})", flush=True)
    settings = {"run": a.run, "sft": a.sft, "steps": a.steps, "rollout_batch": a.rollout_batch, "group": a.group, "lr": a.lr,
                "kl": a.kl, "mode": a.mode, "temperature": a.temperature, "micro_batch": a.micro_batch,
                "max_train_rows": a.max_train_rows, "eval_every": a.eval_every, "valid_rows": a.valid_rows,
                "test_rows": a.test_rows, "max_history": a.max_history, "rows": rows_key(row_ids, targets),
                "sft_valid_ndcg@10": valid_before,
                **({"rl_holdout_share": a.rl_holdout_share} if a.rl_holdout_share else {}),
                **({"signal_rounds": a.signal_rounds} if a.signal_rounds != 1 else {}),
                **({"target_in_group": True} if a.target_in_group else {})}
    res = {"sft": {"ndcg@10": float(before["ndcg@10"].mean()), "hr@10": float(before["hr@10"].mean()),
                   "valid_ndcg@10": valid_before, "collapse": collapse_stats(before_topk, len(catalog.item_ids))},
           "mixes": {}, "settings": {**settings, "seeds": seeds, "test_rows_used": len(targets),
                                     "precision": f"bf16={bf16} ({reason})", "train_prompts": len(train.targets)},
           "command": command("benchmarks.rl_local"), "machine": machine()}
    arms = ([(mix_name(r, c), r, c) for r in mixes for c in a.sft_coefs] +
            ([(CONTROL, None, 0.0)] if a.sft_control else []))
    by_seed: dict[str, dict[int, dict]] = {}  # arm -> seed -> per-row test metrics (for the pairing with the control)
    for name, rewards, coef in arms:
        per_seed, runs, curves = [], [], []
        for seed in seeds:
            path = Path(a.runs_dir) / f"{name}-s{seed}.npz"
            key = json.dumps({**settings, "rewards": rewards, "seed": seed, **({"sft_coef": coef} if coef else {})},
                             sort_keys=True)
            got = load_run(path, key)
            if got is None and a.finished_only:
                res.setdefault("missing_runs", []).append(f"{name} seed {seed}")
                continue
            if got is None:
                rec, r, topk, rows, curve = one_run(a, d, tok, catalog, task, rewards, seed, bf16, valid_before,
                                                    key, coef)
                if not np.array_equal(rows.row_ids, row_ids):
                    raise RuntimeError("the RL policy was scored on other test rows than the SFT model")
                save_run(path, key, rec, r, topk, rows.row_ids, rows.targets, curve)
            else:
                rec, r, curve = got[0], got[1], got[5]
                print(f"[rl] {name} seed {seed}: reused {path}", flush=True)
            print(f"[rl] {name} seed {seed}: test ndcg@10 {rec['ndcg@10']:.4f} (SFT "
                  f"{res['sft']['ndcg@10']:.4f}), valid {rec['valid_ndcg@10_before']:.4f} -> "
                  f"{rec['valid_ndcg@10_after']:.4f}", flush=True)
            per_seed.append(r)
            by_seed.setdefault(name, {})[seed] = r
            runs.append(rec)
            curves.append(curve)
        if not runs:
            continue
        kept = [r if x["handed_on"] == "rl" else before for r, x in zip(per_seed, runs)]
        res["mixes"][name] = {"rewards": rewards, **({"sft_coef": coef} if coef else {}), "runs": runs, "curves": curves,
                              "summary": summarize(per_seed, METRICS),
                              "vs_sft": paired_diff(per_seed, [before]),
                              "keep_best_vs_sft": paired_diff(kept, [before])}
        res["wall_min"] = round((time.time() - t0) / 60, 1)
        write_outputs(Path(a.out), res, markdown(res))
    if CONTROL in by_seed:  # each GRPO row against the supervised control, paired on rows and on the seeds both have
        for name, runs_of in by_seed.items():
            both = sorted(set(runs_of) & set(by_seed[CONTROL]))
            if name != CONTROL and both:
                res["mixes"][name]["vs_control"] = {**paired_diff([runs_of[s] for s in both],
                                                                  [by_seed[CONTROL][s] for s in both]), "seeds": both}
        write_outputs(Path(a.out), res, markdown(res))
    plot(res, Path(a.out).with_suffix(""))
    print(markdown(res))


if __name__ == "__main__":
    main()
