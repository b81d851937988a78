"""Cold start for items added after training (issue #12): does a semantic SID init help rank them?

    python -m benchmarks.new_items --model-dir ~/.cache/raygen/models/smollm2-135m-instruct \
        --run runs/industrial --variants mean,sa_init,star --seeds 0 --layers 4 --epochs 5 ...

A seeded share of the catalog (``--new-share``, default 5 %) is held out as *new items*, drawn uniformly
among the items that are targets of test rows (so that every new item has at least one test row whose
target it is; a uniform draw over the whole catalog would give far fewer such rows). Before training they
vanish from everything: train and valid samples whose target is a new item are dropped, new items are cut
out of the train and valid histories (a sample left with an empty history is dropped), all counted; the
quantizer (the run's sids config, ``--quantizer`` rqvae | rqkmeans) is fitted on the old items' embeddings
only and gives them collision-free SIDs; SA-Init's token keywords come from the old items only. After
training the new items get SIDs from that quantizer through ``raygen.sid.assign.assign_new_items`` (the
new-item path: no retraining, no old SID changes) and join the trie. SID tokens that only new items use are
added to the vocabulary before training (initialised like every token without keywords) but never appear
in training.

Each variant (``mean``, ``sa_init``, ``star``, ... of benchmarks/quality_local.py) is trained on the old
items with quality_local's trainer and scored on the whole test split with the trie holding old + new
items; test rows keep their histories as they are (a history may hold a new item: it has a SID by then).
Reported on the *new* rows (target a new item) and the *old* rows (target an old item; also split into
old items that are / are never training targets): HR@1/5/10, NDCG@5/10 and ``new@10``, the share of rows
with any new item in the top 10. Baselines on the same rows: popularity over the held-out training data
(it can never rank a new item: the floor) and a content baseline that needs no training, every catalog
item ranked by cosine between its corpus text embedding and the mean unit embedding of the user's last
``N`` history items (``--content-last``, one baseline per N; history items are not excluded, as the
beam search does not exclude them either). Each run also gives the eval stage's hybrid, ``<variant>+content``
(its top 10 fused with the content ranking's top ``eval.fusion_depth`` by ``raygen.eval.fusion``), paired
with the variant. ``--finished-only`` reports the kept runs and lists the missing ones without training.

Outputs beside ``--out``: the JSON (written after every finished run), a Markdown table, a bar plot (``.png``), each run's
per-row results in ``<out>_runs/`` (reused by a rerun made with the same settings and the same held-out
SIDs) and the hold-out itself in ``<out>_holdout/`` (new item ids, old + new codes, tokens, quantizer), reused
by a later invocation on the same inputs instead of fitting again (commit it: a refit on another CPU kind gives
other SIDs, and the runs of different hold-outs are never merged).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.quality import cell, ci_bars, paired_diff, per_row, slice_summaries  # noqa: E402
from benchmarks.quality_local import (Data, add_training_args, command, finished_run,  # noqa: E402
                                      machine, seed_major, settings_of, variants_and_seeds, write_outputs)
from raygen.eval.baselines import content_rank  # noqa: E402
from raygen.eval.config import EvalConfig  # noqa: E402
from raygen.eval.fusion import rrf_fuse  # noqa: E402
from raygen.cli import setup_logging  # noqa: E402
from raygen.io import atomic_path, read_json, read_parquet, write_json, write_parquet  # noqa: E402

METRICS = ["hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10", "new@10"]
SLICES = ("new", "old", "old_warm", "old_cold")
SCRIPT = "benchmarks.new_items"


# ------------------------------------------------------------------------------------------ hold-out

def pick_new_items(samples: pa.Table, item_ids: np.ndarray, share: float, seed: int) -> np.ndarray:
    """``round(share * catalog size)`` item ids (sorted), drawn uniformly without replacement (seeded) from
    the catalog items that are targets of test rows."""
    test = samples.filter(pc.equal(samples.column("split"), "test"))
    pool = np.intersect1d(np.asarray(test.column("target").to_numpy(), dtype=np.int64), item_ids)
    n = int(round(share * len(item_ids)))
    if not 0 < n <= len(pool):
        raise ValueError(f"--new-share {share} makes {n} new items; the pool (catalog items that are test "
                         f"targets) has {len(pool)}")
    return np.sort(np.random.default_rng(seed).choice(pool, n, replace=False))


def hold_out(samples: pa.Table, new_ids: np.ndarray, splits: tuple[str, ...] = ("train", "valid")
             ) -> tuple[pa.Table, dict]:
    """``samples`` as training sees them before the new items exist, and what was removed: in ``splits``, a
    row whose target is new is dropped, new items are cut out of the other rows' histories and a row left
    with an empty history is dropped. Other splits' rows are kept unchanged (row order kept)."""
    new = set(int(i) for i in new_ids)
    counts = {s: {"rows_in": 0, "dropped_target_new": 0, "histories_cut": 0, "history_items_removed": 0,
                  "dropped_history_empty": 0, "rows_out": 0} for s in splits}
    rows = []
    for r in samples.to_pylist():
        c = counts.get(r["split"])
        if c is None:
            rows.append(r)
            continue
        c["rows_in"] += 1
        if r["target"] in new:
            c["dropped_target_new"] += 1
            continue
        history = list(r["history"] or [])
        kept = [h for h in history if h not in new]
        if len(kept) < len(history):
            c["histories_cut"] += 1
            c["history_items_removed"] += len(history) - len(kept)
            if not kept:
                c["dropped_history_empty"] += 1
                continue
        rows.append({**r, "history": kept})
        c["rows_out"] += 1
    test = [r for r in samples.to_pylist() if r["split"] == "test"]
    counts["test"] = {"rows": len(test), "target_new": sum(r["target"] in new for r in test),
                      "history_holds_new": sum(any(h in new for h in (r["history"] or [])) for r in test)}
    return pa.Table.from_pylist(rows, schema=samples.schema), counts


@dataclass
class HeldOutSids:
    old_ids: np.ndarray
    old_codes: np.ndarray
    """Collision-free codes of the old items, from a quantizer fitted on their embeddings only."""
    new_ids: np.ndarray
    new_codes: np.ndarray
    """The new items' codes from :func:`raygen.sid.assign.assign_new_items` (rows in ``new_ids`` order)."""
    quantizer: object
    token_rows: list[dict]
    """Tokens of the old items' codes, keywords ranked over the old items only."""
    report: dict

    def codes_table(self, which: str = "all") -> pa.Table:
        """(item_id, codes) of the ``old`` items or of ``all`` (old + new), in item-id order."""
        from raygen.sid.stage import codes_table

        ids, codes = self.old_ids, self.old_codes
        if which == "all":
            ids, codes = np.concatenate([ids, self.new_ids]), np.concatenate([codes, self.new_codes])
        order = np.argsort(ids, kind="stable")
        return codes_table(ids[order], codes[order])

    def vocab_rows(self) -> list[dict]:
        """Every SID token of old + new codes, sorted: the old items' token rows plus, for a token only new
        items use, a row without keywords (SA-Init gives it the ``mean`` row)."""
        from raygen.sid.token_keywords import describe
        from raygen.sid.tokens import sid_token

        have = {(r["level"], r["code"]) for r in self.token_rows}
        extra = sorted({(lvl, int(c)) for lvl in range(self.new_codes.shape[1]) for c in self.new_codes[:, lvl]} - have)
        rows = self.token_rows + [{"level": lvl, "code": c, "token": sid_token(lvl, c), "keywords": [],
                                   "description": describe([])} for lvl, c in extra]
        return sorted(rows, key=lambda r: (r["level"], r["code"]))

    def digest(self) -> str:
        """SHA-256 of the held-out item ids and every code: a saved run is reused only on the same SIDs."""
        h = hashlib.sha256()
        for arr in (self.old_ids, self.old_codes, self.new_ids, self.new_codes):
            h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
        return h.hexdigest()


def held_out_sids(sid_cfg, ids: np.ndarray, X: np.ndarray, keywords: list[list[str]], new_ids: np.ndarray
                  ) -> HeldOutSids:
    """Fit the quantizer on the old items (``ids`` minus ``new_ids``) as the sids stage does, then give the
    new items SIDs through the new-item path. ``keywords[i]`` are item ``ids[i]``'s."""
    from raygen.sid.assign import assign_new_items
    from raygen.sid.metrics import collision_rate
    from raygen.sid.stage import fit_unique_codes
    from raygen.sid.token_keywords import token_keyword_rows

    order = np.argsort(ids, kind="stable")  # item-id order, as the sids stage
    ids, X, keywords = ids[order], X[order], [keywords[i] for i in order]
    is_new = np.isin(ids, new_ids)
    if is_new.sum() != len(new_ids):
        raise ValueError(f"{len(new_ids) - int(is_new.sum())} new items have no embedding")
    old = ~is_new
    q, _, old_codes, rep, fit_s = fit_unique_codes(sid_cfg, ids[old], X[old])
    new_codes, arep = assign_new_items(q, X[is_new], ids[is_new], old_codes, ids[old])
    clash = set(map(tuple, old_codes.tolist())) & set(map(tuple, new_codes.tolist()))
    if clash or collision_rate(new_codes) > 0:
        raise AssertionError(f"new SIDs collide ({len(clash)} with old items)")
    rows = token_keyword_rows(old_codes, [keywords[i] for i in np.flatnonzero(old)], sid_cfg.n_token_keywords)
    out = HeldOutSids(ids[old], old_codes, ids[is_new], new_codes, q, rows, {})
    out.report = {"method": sid_cfg.method, "fit_seconds": round(fit_s, 2), "old_items": int(old.sum()),
                  "old_collisions": rep.to_dict(), "new_assignment": arep, "levels_final": int(old_codes.shape[1]),
                  "tokens_old": len(rows), "tokens_only_new_items_use": len(out.vocab_rows()) - len(rows)}
    return out


def inputs_digest(sid_cfg, ids: np.ndarray, X: np.ndarray, keywords: list[list[str]], new_ids: np.ndarray) -> str:
    """SHA-256 of everything :func:`held_out_sids` reads: equal inputs, equal hold-out (on one machine kind)."""
    h = hashlib.sha256(json.dumps(asdict(sid_cfg), sort_keys=True, default=str).encode())
    for arr in (np.asarray(ids, dtype=np.int64), np.asarray(X, dtype=np.float32), np.asarray(new_ids, dtype=np.int64)):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(json.dumps(keywords).encode())
    return h.hexdigest()


def save_holdout(folder: Path, s: HeldOutSids, counts: dict, inputs: str) -> None:
    """The hold-out as files (old + new codes, tokens, quantizer, holdout.json with the inputs' digest): read
    back by :func:`load_holdout` on a later invocation with the same inputs."""
    from raygen.sid.quantizer import save_quantizer
    from raygen.sid.token_keywords import tokens_table

    codes = s.codes_table("all")
    codes = codes.append_column("new", pa.array(np.isin(codes.column("item_id").to_numpy(), s.new_ids)))
    write_parquet(folder / "codes.parquet", codes)
    write_parquet(folder / "tokens.parquet", tokens_table(s.vocab_rows()))
    save_quantizer(s.quantizer, folder, extra={"levels_final": int(s.old_codes.shape[1])})
    write_json(folder / "holdout.json", {"new_item_ids": s.new_ids.tolist(), "counts": counts, "sids": s.report,
                                         "digest": s.digest(), "inputs": inputs})


def load_holdout(folder: Path, inputs: str) -> HeldOutSids | None:
    """The hold-out saved in ``folder`` when it was made from the same inputs, else None (fit again).

    Why reuse rather than refit: fitting is deterministic on one machine, but RQ-VAE training gives other
    codes on another CPU kind (raygen/pin.py), and the runs of one benchmark must share their SIDs even
    when they are made in sessions on different machines (commit the folder to pin it)."""
    from raygen.sid.quantizer import load_quantizer

    try:
        meta = read_json(folder / "holdout.json")
    except (OSError, ValueError):
        return None
    if meta.get("inputs") != inputs:
        return None
    table = read_parquet(folder / "codes.parquet")
    ids, is_new = table.column("item_id").to_numpy(), table.column("new").to_numpy(zero_copy_only=False)
    codes = np.array(table.column("codes").to_pylist(), dtype=np.int64)
    old_keys = {(lvl, int(c)) for lvl in range(codes.shape[1]) for c in codes[~is_new, lvl]}
    rows = [r for r in read_parquet(folder / "tokens.parquet").to_pylist() if (r["level"], r["code"]) in old_keys]
    new_order = np.argsort(ids[is_new], kind="stable")
    s = HeldOutSids(ids[~is_new], codes[~is_new], ids[is_new][new_order], codes[is_new][new_order],
                    load_quantizer(folder), rows, {**meta["sids"], "reused_from": str(folder)})
    if s.digest() != meta["digest"]:
        raise ValueError(f"{folder}: its codes do not match holdout.json's digest (a damaged hold-out): remove it")
    return s


# ------------------------------------------------------------------------------------------ baselines

def baseline_rows(train_samples: pa.Table, histories: list[list[int]], targets: np.ndarray, item_ids: np.ndarray,
                  emb_ids: np.ndarray, X: np.ndarray, new_ids: np.ndarray, lasts: list[int], k: int = 10) -> dict:
    """Per-row metrics (with ``new@10``) of popularity (counted on ``train_samples``' train split) and the
    content baseline for each N in ``lasts``, on the rows with these ``histories`` / ``targets``."""
    from raygen.eval.baselines import popularity_rank

    train = train_samples.filter(pc.equal(train_samples.column("split"), "train"))
    tops = {"popularity": popularity_rank(train.column("history").to_pylist(), train.column("target").to_pylist(),
                                          len(targets), k)}
    for n in lasts:
        tops[f"content_last{n}"] = content_rank(histories, item_ids, emb_ids, X, k, n)
    return {b: {"rows": [with_new_share(per_row(t, targets), t, new_ids)]} for b, t in tops.items()}


def with_new_share(r: dict, topk: np.ndarray, new_ids: np.ndarray) -> dict:
    """``r`` plus ``new@10``: 1 where any new item is in the row's top 10."""
    return {**r, "new@10": np.isin(np.asarray(topk)[:, :10], new_ids).any(axis=1).astype(float)}


# ------------------------------------------------------------------------------------------ summary

def row_slices(targets: np.ndarray, new_ids: np.ndarray, train_samples: pa.Table) -> dict[str, np.ndarray]:
    """Boolean masks over the scored rows: ``new`` (target a new item), ``old``, and the old rows split into
    ``old_warm`` / ``old_cold`` (target is / is never a training target after the hold-out)."""
    from raygen.eval.slices import cold_mask, training_targets

    new = np.isin(targets, new_ids)
    cold = cold_mask(targets, training_targets(train_samples))
    return {"new": new, "old": ~new, "old_warm": ~new & ~cold, "old_cold": ~new & cold}


def paired(rows: dict[str, list], masks: dict[str, np.ndarray], names: list[str], refs: list[str]) -> dict:
    """Paired bootstrap CIs of NDCG@10 and HR@10 differences, name - ref, on the new and the old rows; a hybrid
    ``<variant>+content`` is also paired with its variant."""
    out = {}
    for name in names:
        per_seed = rows[name]
        for ref in dict.fromkeys([*refs, name.removesuffix("+content")]):
            if ref == name or ref not in rows:
                continue
            for part in ("new", "old"):
                m = masks[part]
                if m.any():
                    cut = lambda rs: [{k: r[k][m] for k in ("ndcg@10", "hr@10")} for r in rs]  # noqa: E731
                    out.setdefault(name, {}).setdefault(part, {})[ref] = {
                        k: paired_diff(cut(per_seed), cut(rows[ref]), k) for k in ("ndcg@10", "hr@10")}
    return out


def markdown(result: dict) -> str:
    st, ho = result["settings"], result["holdout"]
    sl = result.get("slices") or {}
    lines = [f"# Items added after training: {ho['n_new']} new items ({100 * st['new_share']:g} % of "
             f"{ho['n_catalog']}), held out before training", "",
             f"{st['model']}, {st['layers']} decoder layers, {st.get('precision', '')}; sequence SFT <= {st['epochs']} "
             f"epochs (batch {st['batch_size']}, lr {st['sft_lr']}, valid NDCG@10 on {st['valid_rows']} valid rows every "
             f"{st['valid_every']} steps, patience {st['patience']}); STAR {st['align_steps']} alignment steps. SIDs: "
             f"{st['sids']}. Seeds {st['seeds']}: mean ± std over seeds (– : one seed) [95 % bootstrap CI over rows].", "",
             "Hold-out (train / valid rows): " + "; ".join(
                 f"{s}: {c['rows_in']} in, {c['dropped_target_new']} dropped (target new), {c['histories_cut']} "
                 f"histories cut ({c['history_items_removed']} items), {c['dropped_history_empty']} dropped (history "
                 f"empty), {c['rows_out']} out" for s, c in ho["counts"].items() if s != "test")
             + f". Test rows whose history holds a new item (kept): {ho['counts']['test']['history_holds_new']}. "
             f"New SIDs: {ho['sids']['new_assignment']}; SID tokens only new items use: "
             f"{ho['sids']['tokens_only_new_items_use']}.", ""]
    cols = METRICS
    for part, title in (("new", "test rows whose target is a new item"), ("old", "test rows whose target is an old item")):
        n = next((s[part]["n"] for s in sl.values()), 0)
        lines += [f"## {title} ({n} rows)", "", "| method | " + " | ".join(c.upper() for c in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for name, s in sl.items():
            x = s[part]
            cells = [cell(x[m]) if x["n"] else "-" for m in cols]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if sl:
        lines += ["Old rows split: NDCG@10 on old items that are training targets (warm) / never training targets "
                  "(cold):", ""]
        for name, s in sl.items():
            lines.append(f"- {name}: " + ", ".join(
                f"{p} ({s[p]['n']} rows) {s[p]['ndcg@10']['mean']:.4f}" if s[p]["n"] else f"{p} (0 rows)"
                for p in ("old_warm", "old_cold")))
        lines.append("")
    if result.get("differences"):
        lines += ["Paired differences (bootstrap 95 % CI over rows), NDCG@10:", ""]
        for name, parts in result["differences"].items():
            for part, refs in parts.items():
                lines.append(f"- {name}, {part} rows: " + ", ".join(
                    f"vs {ref} {d['ndcg@10']['diff']:+.4f} [{d['ndcg@10']['ci95'][0]:+.4f}, {d['ndcg@10']['ci95'][1]:+.4f}]"
                    for ref, d in refs.items()))
        lines.append("")
    lines += ["Popularity is counted on the held-out training data, so it never ranks a new item (the floor on new "
              "rows). content_lastN: cosine between the corpus text embeddings of each catalog item and the mean "
              "of the user's last N history items; no training. <variant>+content: the eval stage's hybrid "
              "(raygen.eval.fusion): the variant's top 10 fused with content_last1's top 50 by reciprocal rank "
              "fusion (k0 60). NEW@10: share of rows with any new item in the top 10.",
              "", f"{'Partial: not every run finished. ' if result['partial'] else ''}"
              f"{'Not run yet: ' + ', '.join(result['missing_runs']) + '. ' if result.get('missing_runs') else ''}Wall time {result['wall_min']} min "
              f"on {result['machine']['cpus']} CPU cores. Command: `{result['command']}`", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """NDCG@10 on the new rows and on the old rows, and NEW@10 on the new rows, per method (variants blue,
    hybrids cyan, baselines gray), bars = mean over seeds, error bars = bootstrap 95 % CI over rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sl = result["slices"]
    names = list(sl)
    colors = ["tab:blue" if n in result["variants"] else "tab:cyan" if n in result.get("hybrids", ()) else "tab:gray"
              for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(max(9.0, 2.2 * len(names) + 3), 3.8))
    for ax, (part, metric) in zip(axes, (("new", "ndcg@10"), ("old", "ndcg@10"), ("new", "new@10"))):
        n = next((s[part]["n"] for s in sl.values()), 0)
        ci_bars(ax, names, [sl[m][part].get(metric) for m in names], colors, f"{metric.upper()}, {part} rows ({n})")
    fig.suptitle(f"{result['holdout']['n_new']} items added after training; bars: mean over seeds, error: 95 % "
                 "bootstrap CI over rows", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


# ------------------------------------------------------------------------------------------ main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the result file (JSON; committed results live in benchmarks/results/)")
    ap.add_argument("--variants", default="mean,sa_init,star")
    add_training_args(ap)
    ap.add_argument("--new-share", type=float, default=0.05, help="share of the catalog held out as new items")
    ap.add_argument("--holdout-seed", type=int, default=0)
    ap.add_argument("--quantizer", choices=["rqvae", "rqkmeans"], default="",
                    help="SID quantizer fitted on the old items (default: the run's sids.method)")
    ap.add_argument("--content-last", default="1,3", help="content baselines: last N history items, comma list")
    ap.add_argument("--deadline", type=float, default=0, help="stop starting runs after this many seconds")
    ap.add_argument("--finished-only", action="store_true",
                    help="the report of the runs already kept with these settings; the missing ones are listed, "
                         "not trained (safe beside a lane that is training them)")
    a = ap.parse_args()
    variants, seeds = variants_and_seeds(ap, a)
    setup_logging(False)
    t0 = time.time()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    from raygen.config import load_config
    from raygen.sid.stage import read_embeddings, read_keywords
    from raygen.sid.token_keywords import tokens_table

    run, out = Path(a.run), Path(a.out)
    items, samples = read_parquet(run / "data/items.parquet"), read_parquet(run / "data/samples.parquet")
    emb_ids, X = read_embeddings(run / "corpus/embeddings.parquet")
    keywords, _ = read_keywords(run / "corpus/keywords.parquet", emb_ids)
    sid_cfg = load_config(run / "config.yaml").sids
    sid_cfg = replace(sid_cfg, method=a.quantizer or sid_cfg.method)

    new_ids = pick_new_items(samples, emb_ids, a.new_share, a.holdout_seed)
    train_samples, counts = hold_out(samples, new_ids)
    inputs = inputs_digest(sid_cfg, emb_ids, X, keywords, new_ids)
    sids = load_holdout(out.parent / f"{out.stem}_holdout", inputs)
    if sids is None:
        sids = held_out_sids(sid_cfg, emb_ids, X, keywords, new_ids)
        save_holdout(out.parent / f"{out.stem}_holdout", sids, counts, inputs)
    old_items = items.filter(pc.invert(pc.is_in(items.column("item_id"), pa.array(new_ids))))
    vocab = sids.vocab_rows()
    train_d = Data.of(old_items, train_samples, sids.codes_table("old"), tokens_table(sids.token_rows), vocab)
    score_d = Data.of(items, samples, sids.codes_table("all"), tokens_table(sids.token_rows), vocab)
    holdout = {"n_new": len(new_ids), "n_catalog": len(emb_ids), "rule": "uniform (seeded) among catalog items that "
               "are test targets", "counts": counts, "sids": sids.report, "digest": sids.digest()}
    print(f"[new] {len(new_ids)} new items; hold-out {json.dumps(counts)}; SIDs {json.dumps(sids.report)}", flush=True)

    settings = settings_of(a, seeds, device)
    settings.update(sids=f"{sid_cfg.method} {sid_cfg.levels} x {sid_cfg.codebook_size} fitted on the old items only "
                    f"(the run's sids config), new items through assign_new_items", sid_config=asdict(sid_cfg),
                    new_share=a.new_share, holdout_seed=a.holdout_seed, holdout_digest=sids.digest(),
                    test_histories="kept as they are (new items in them have SIDs)")
    fingerprint = json.dumps({k: v for k, v in settings.items() if k != "seeds"}, sort_keys=True, default=str)
    lasts = [int(n) for n in a.content_last.split(",") if n]
    per_variant = {v: {"runs": []} for v in variants}
    rows: dict[str, list] = {v: [] for v in variants}
    hybrids: dict[str, list] = {}  # "<variant>+content": the eval stage's hybrid ranking of each run
    base = scored = masks = content = None
    missing: list[str] = []

    def write(partial: bool) -> dict:
        done = {v: rows[v] for v in variants if rows[v]}
        all_rows = {**done, **hybrids, **{b: r["rows"] for b, r in (base or {}).items()}}
        result = {"holdout": holdout, "variants": {v: per_variant[v] for v in done}, "baselines": sorted(base or {}),
                  "hybrids": list(hybrids),
                  "slices": slice_summaries(all_rows, masks, METRICS) if masks else {},
                  "differences": paired(all_rows, masks, [*done, *hybrids],
                                        ["mean", *[f"content_last{n}" for n in lasts]]) if masks else {},
                  "partial": partial or bool(missing), "missing_runs": missing, "settings": settings, "wall_min": round((time.time() - t0) / 60, 1),
                  "command": command(SCRIPT), "machine": machine()}
        write_outputs(out, result, markdown(result))
        if masks:
            plot(result, out.with_suffix(".png"))
        return result

    for seed, name in seed_major(variants, seeds, a.deadline, t0):
        got = finished_run(a, name, seed, fingerprint, train_d, score_d, device)
        if got is None:  # --finished-only: not kept yet
            missing.append(f"{name} seed {seed}")
            continue
        (rec, r, topk, row_ids, targets, _), _ = got
        if scored is not None and not np.array_equal(scored, row_ids):
            raise RuntimeError("variants were scored on different test rows")
        if scored is None:
            scored = row_ids
            histories = [list(h) for h in samples.column("history").take(pa.array(row_ids)).to_pylist()]
            base = baseline_rows(train_samples, histories, targets, score_d.codes.column("item_id").to_numpy(),
                                 emb_ids, X, new_ids, lasts)
            masks = row_slices(targets, new_ids, train_samples)
            content = content_rank(histories, score_d.codes.column("item_id").to_numpy(), emb_ids, X,
                                   EvalConfig().fusion_depth, 1)
        per_variant[name]["runs"].append(rec)
        rows[name].append(with_new_share(r, topk, new_ids))
        fused = rrf_fuse([topk, content], topk.shape[1])
        hybrids.setdefault(f"{name}+content", []).append(with_new_share(per_row(fused, targets), fused, new_ids))
        settings["precision"] = f"bf16={rec['precision']['bf16']} ({rec['precision']['reason']})"
        settings["test_rows_used"] = len(targets)
        res = write(partial=True)
        s = res["slices"][name]
        print(f"[new] {name} seed {seed}: new rows ({s['new']['n']}) ndcg@10 {rows[name][-1]['ndcg@10'][masks['new']].mean():.4f}"
              f" new@10 {rows[name][-1]['new@10'][masks['new']].mean():.3f}; old rows ndcg@10 "
              f"{rows[name][-1]['ndcg@10'][masks['old']].mean():.4f} ({rec['wall_s']}s, total {time.time() - t0:.0f}s)",
              flush=True)
    result = write(partial=any(len(rows[v]) < len(seeds) for v in variants))
    print(markdown(result))


if __name__ == "__main__":
    main()
