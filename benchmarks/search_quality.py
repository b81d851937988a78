"""Search quality (issue #12): STAR's search task (a shopper's query -> the item) next to next-item
recommendation, per SID-token init, against text-retrieval baselines on the same test queries.

    python -m benchmarks.search_quality --model-dir ~/.cache/raygen/models/smollm2-135m-instruct \\
        --run runs/industrial --out benchmarks/results/search_quality_industrial.json \\
        --variants mean,sa_init,star --seeds 0,1,2 --layers 4 --epochs 5 ...

Each variant (``mean``, ``sa_init``, ``star``, ... of benchmarks/quality_local.py) x seed is trained with
quality_local's trainer and knobs (every ``add_training_args`` flag means the same), its sequence-format
next-item SFT mixed with STAR's search task: ``--search-ratio`` query -> SID examples per next-item example,
drawn (seeded, once: every epoch repeats them) from the *train* split of the corpus stage's
``corpus/queries.parquet`` by the library's task builder (``raygen.tasks.build_sft_examples``); valid and test
queries are never trained on. Early stopping stays on next-item valid NDCG@10 (no search validation).

Default ``--search-ratio 1.0``: one search example per next-item example, doubling the SFT examples (a middle
ground on a CPU budget). On Industrial (2,625 next-item windows, 11,058 train queries, 3 per item) that is a
fixed sample of 2,625 train queries whose answers cover 2,076 of the 3,686 items (56 %, mean seed 0; 0.5 would
cover 32 %), so the other test queries ask for an item never seen as a search answer; the JSON records, per
run, how many test queries are of each kind and the search metrics on both. ``--search-ratio 4.22``
(>= 11,058 / 2,625) takes every train query at least once, covering every item, at roughly 5x the SFT
examples; 0 trains no search at all (a control: the model never saw the search prompt).

Then, per run: (a) the next-item test split with the constrained beam search (quality_local's
``score_test``): HR@K / NDCG@K per row, the cold / warm slices (target never / ever a training target);
(b) the search test queries through the eval stage's search path (``raygen.eval.stage.search_rankings``: the
first ``query2sid`` template, constrained beam search over the catalog's SIDs): Recall@K / NDCG@K for K in
1, 3, 5, 10, per query. Baselines on exactly the same test queries: the eval stage's BM25 over the items' text
(title, brand, categories, description), and a sentence-embedding baseline (cosine between the query's
embedding and the corpus stage's item embeddings, with the run's ``corpus.embed_model``, offline; skipped with
the reason recorded when there are no item embeddings or the embedder cannot be loaded); popularity on the
next-item rows (``--sasrec`` adds raygen's SASRec). Reported: mean ± std over seeds and 95 % bootstrap CIs over
rows (quality.py's ``summarize``), paired CIs of NDCG@10 differences, the search metrics split by where the
test query came from (teacher or the deterministic fallback: ``queries.parquet`` records it per item; an
item's ``n_teacher`` teacher queries come first).

Outputs: ``--out`` JSON (written after every run), ``.md`` table and ``.png`` bar plot beside it; each run's
per-row results (compressed) in ``--runs-dir`` (default ``<out stem>_runs`` beside ``--out``), reused by a
rerun with the same settings and the same data (a digest of the samples, items, SIDs and queries).
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.quality import (METRICS, baseline_rows, cell, ci_bars, cold_rows, cold_warm, differences, per_row,  # noqa: E402
                                run_embeddings, slice_summaries, summarize)
from benchmarks.quality_local import (VARIANTS, Data, add_training_args, command, data_digest, finished_run,  # noqa: E402
                                      load, load_extra, machine, run_file, seed_major, settings_of, sft_examples,
                                      sft_tasks, variants_and_seeds, write_outputs)
from raygen.cli import setup_logging  # noqa: E402
from raygen.configbase import Resources  # noqa: E402
from raygen.eval.config import EvalConfig  # noqa: E402
from raygen.eval.rows import Catalog  # noqa: E402
from raygen.eval.baselines import rank_by_cosine  # noqa: E402
from raygen.eval.search import BM25, SEARCH_KS, search_rows, search_table  # noqa: E402
from raygen.eval.stage import search_rankings  # noqa: E402
from raygen.io import atomic_path, read_parquet  # noqa: E402
from raygen.lm.vocab import add_sid_tokens  # noqa: E402
from raygen.tasks.builders import sids_by_item  # noqa: E402
from raygen.tasks.templates import SEARCH_TASK  # noqa: E402

SCRIPT = "benchmarks/search_quality.py"
SEARCH_METRICS = [f"recall@{k}" for k in SEARCH_KS] + [f"ndcg@{k}" for k in SEARCH_KS]
BEAM = 10


# ------------------------------------------------------------------------------------------ search rows

def search_per_row(topk: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query Recall@K (= HR@K: one relevant item per query) and NDCG@K, K in 1, 3, 5, 10."""
    return {m.replace("hr@", "recall@", 1): v for m, v in per_row(topk, targets, SEARCH_KS).items()}


def query_origin(queries: pa.Table) -> np.ndarray:
    """Per row of ``queries``, 'teacher' or 'fallback': the corpus stage writes an item's queries in the order
    ``raygen.corpus.queries.extract_queries`` made them, its ``n_teacher`` teacher queries first, then the
    deterministic fallback's."""
    items, n_teacher = queries.column("item_id").to_pylist(), queries.column("n_teacher").to_pylist()
    seen: Counter = Counter()
    out = []
    for item, n in zip(items, n_teacher):
        out.append("teacher" if seen[item] < n else "fallback")
        seen[item] += 1
    return np.asarray(out)


def origin_counts(queries: pa.Table, row_ids: np.ndarray) -> dict:
    """Where the scored test queries (``row_ids``: rows of ``queries``) came from: per query (teacher /
    fallback) and by their item's ``source`` (teacher / mixed / fallback)."""
    origin = query_origin(queries)[row_ids]
    source = np.asarray(queries.column("source").to_pylist())[row_ids]
    return {"n": len(row_ids), "teacher": int((origin == "teacher").sum()), "fallback": int((origin == "fallback").sum()),
            "by_item_source": {s: int(c) for s, c in sorted(Counter(source.tolist()).items())}}


def search_config(a, bf16: bool) -> EvalConfig:
    """The eval stage's search settings for a run: top-10 beam search in this process, SID-only scoring (as
    quality_local's ``score_test``), the run's precision, at most ``--search-rows`` test queries."""
    return EvalConfig(beam_width=BEAM, batch_size=a.eval_batch, resources=Resources(count=0), bf16=bf16,
                      sid_only_head=True, search_max_rows=a.search_rows, seed=0)


def search_scorer(a, name: str, seed: int, queries: pa.Table, codes: pa.Table):
    """quality_local's ``finished_run`` hook: the trained model's rankings of the search test queries."""
    def after(lm, tok, catalog, ssum) -> dict[str, np.ndarray]:
        t = time.time()
        rows, _, _, topk, _ = search_rankings(None, queries, codes, tok, sft_tasks(a, name, seed, a.search_ratio),
                                              search_config(a, ssum["precision"]["bf16"]), model=lm)
        return {"search_row_ids": rows.row_ids, "search_targets": rows.targets, "search_topk": topk,
                "search_seconds": np.asarray(round(time.time() - t, 2))}
    return after


def search_trained_items(d: Data, queries: pa.Table, a, name: str, seed: int) -> set[int]:
    """Items that are the answer of a search example in the SFT data of ``name`` / ``seed`` (rebuilt: the
    builders are deterministic)."""
    item_of = {sid: item for item, sid in sids_by_item(d.codes).items()}
    examples = sft_examples(d, sft_tasks(a, name, seed, a.search_ratio), queries)
    return {item_of[ex["answer"]] for ex in examples if ex["task"] == SEARCH_TASK}


# ------------------------------------------------------------------------------------------ baselines

def dense_rank(run: Path, spec: str, texts: list[str], item_ids: np.ndarray, k: int) -> tuple[np.ndarray | None, dict]:
    """Top-``k`` catalog items per query by cosine between the query's sentence embedding (``spec``, loaded
    offline) and the corpus stage's item embeddings; ``(None, {"skipped": reason})`` when that cannot run."""
    from raygen.corpus.embed import embed_texts, load_embedder
    from raygen.sid.stage import read_embeddings

    path = run / "corpus/embeddings.parquet"
    if not path.exists():
        return None, {"skipped": f"no item embeddings ({path} does not exist)"}
    try:
        model = load_embedder(spec, "cpu")
    except (OSError, ImportError, ValueError) as e:  # FileNotFoundError is an OSError
        return None, {"skipped": f"query embedder {spec!r} not available offline: {e}"}
    emb_ids, X = read_embeddings(path)
    Q = embed_texts(model, texts, normalize=True)
    if Q.shape[1] != X.shape[1]:
        return None, {"skipped": f"query embedder {spec!r} gives {Q.shape[1]} dims, the item embeddings have "
                                 f"{X.shape[1]}: not the same model"}
    have = set(emb_ids.tolist())
    cand = np.asarray([i for i in item_ids if i in have], dtype=np.int64)
    info = {"embedder": spec, "dim": int(X.shape[1]), "items_ranked": len(cand),
            "catalog_items_without_embedding": len(item_ids) - len(cand)}
    return rank_by_cosine(Q, cand, emb_ids, X, k), info


def embedder_spec(run: Path, a) -> str:
    """``--embedder``, else the embedder the corpus stage used (the run's ``corpus.embed_model``)."""
    if a.embedder:
        return a.embedder
    from raygen.config import load_config

    return load_config(run / "config.yaml" if (run / "config.yaml").exists() else None).corpus.embed_model


def search_baselines(run: Path, items: pa.Table, texts: list[str], targets: np.ndarray, item_ids: np.ndarray,
                     a) -> tuple[dict, dict]:
    """``({name: per-row metrics}, {name: description})`` of BM25 (the eval stage's) and the dense baseline
    on the search test queries ``texts``."""
    t = time.time()
    rows = {"bm25": search_per_row(BM25(items).rank(texts, BEAM), targets)}
    info = {"bm25": {"what": "Okapi BM25 (k1 1.2, b 0.75) over title, brand, categories, description "
                             "(raygen.eval.search.BM25, the eval stage's baseline)", "seconds": round(time.time() - t, 1)}}
    if a.embedder == "none":
        info["dense"] = {"skipped": "--embedder none"}
        return rows, info
    t = time.time()
    top, info["dense"] = dense_rank(run, embedder_spec(run, a), texts, item_ids, BEAM)
    if top is not None:
        rows["dense"] = search_per_row(top, targets)
        info["dense"].update(what="cosine(query embedding, item embedding) over the catalog, no training",
                             seconds=round(time.time() - t, 1))
    return rows, info


# ------------------------------------------------------------------------------------------ output

def queries_note(o: dict) -> str:
    """The words the report must carry about where the test queries came from."""
    n, teacher, fallback = o["n"], o["teacher"], o["fallback"]
    text = (f"Of the {n} test queries, {teacher} {'was' if teacher == 1 else 'were'} written by the teacher LLM "
            f"and {fallback} "
            f"({100 * fallback / max(n, 1):.1f} %) are the corpus stage's deterministic fallback queries, built from "
            "the item's own title, brand and category words (raygen.corpus.queries.fallback_queries; by item: "
            + ", ".join(f"{k} {v}" for k, v in o["by_item_source"].items()) + ").")
    if fallback >= n / 2:
        text += (" Such queries are mostly words copied from the very text BM25 indexes, so BM25 is strong here by "
                 "construction: these figures measure how well a method finds an item from its own title words, not "
                 "how it handles real shoppers' queries, and the gap to BM25 says little about STAR's claim.")
    return text


def markdown(result: dict) -> str:
    st, s, nx = result["settings"], result["search"], result["next_item"]
    kept = ", ".join(f"{v} {len(r['runs'])}" for v, r in result["variants"].items())
    lines = [f"# Search quality: {s['query_origin']['n']} test queries (query -> item), {len(st['seeds'])} seed(s)"
             + (f" planned (runs kept: {kept})" if result.get("partial") else ""), "",
             *([f"Not run yet (missing from every table): {', '.join(result['missing_runs'])}.", ""]
               if result.get("missing_runs") else []),
             f"{st['model']}, {st['layers']} decoder layers, {st.get('precision', '')}. Sequence next-item SFT "
             f"(<= {st['epochs']} epochs, batch {st['batch_size']}, lr {st['sft_lr']}, valid NDCG@10 on "
             f"{st['valid_rows']} valid rows every {st['valid_every']} steps, patience {st['patience']}) mixed with "
             f"STAR's search task at {st['search_ratio']} search examples per next-item example (train-split queries "
             f"only); STAR {st['align_steps']} alignment steps. SIDs: {st['sids']}. Mean ± std over seeds (– : one seed) "
             "[95 % bootstrap CI over rows of the seed-averaged metric].", "", queries_note(s["query_origin"]), ""]
    methods = s["methods"]
    for metric, title in (("recall", "Recall@K"), ("ndcg", "NDCG@K")):
        cols = [f"{metric}@{k}" for k in SEARCH_KS]
        lines += [f"## Search {title}", "", "| method | " + " | ".join(c.upper() for c in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        lines += [f"| {m} | " + " | ".join(cell(r["summary"][c]) for c in cols) + " |" for m, r in methods.items()]
        lines.append("")
    if s["differences"]:
        lines += ["Paired differences of search NDCG@10 (bootstrap 95 % CI over queries):", ""]
        lines += [f"- {v}: " + ", ".join(f"vs {b} {d['diff']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
                                         for b, d in ds.items()) for v, ds in s["differences"].items()]
        lines.append("")
    sl = s["slices_by_origin"]
    if sl:
        lines += ["Search NDCG@10 by query origin: " + "; ".join(
            f"{m} " + ", ".join(f"{p} ({x['n']}) {x['ndcg@10']['mean']:.4f}" if x["n"] else f"{p} (0)"
                                for p, x in parts.items()) for m, parts in sl.items()), ""]
    seen = s["seen_in_search_training"]
    if seen:
        def avg(rs: list[dict], key: str) -> str:
            vals = [r[key] for r in rs if r[key] is not None]
            return f"{np.mean(vals):.4f}" if vals else "-"

        lines += ["Test queries whose item is / is not the answer of a search example in that run's SFT data "
                  "(mean over seeds of the rows and of search NDCG@10): " + "; ".join(
                      f"{v} seen {np.mean([r['n_seen'] for r in rs]):.0f} rows {avg(rs, 'ndcg@10_seen')}, unseen "
                      f"{np.mean([r['n_unseen'] for r in rs]):.0f} rows {avg(rs, 'ndcg@10_unseen')}"
                      for v, rs in seen.items()) + ".", ""]
    lines += ["Baselines: " + "; ".join(f"{b}: {i.get('what') or 'skipped, ' + i['skipped']}"
                                        for b, i in s["baselines"].items()), ""]
    sl = nx["slices"]
    cols = METRICS
    lines += [f"## Next-item test ({nx['n_rows']} rows), same models", "",
              "| method | " + " | ".join(c.upper() for c in cols) + " | cold NDCG@10 | warm NDCG@10 |",
              "|---|" + "---|" * (len(cols) + 2)]
    for m, r in nx["methods"].items():
        parts = [f"{cell(sl[m][p]['ndcg@10'])} ({sl[m][p]['n']})" if sl.get(m, {}).get(p, {}).get("n") else "-"
                 for p in ("cold", "warm")]
        lines.append(f"| {m} | " + " | ".join(cell(r["summary"][c]) for c in cols) + " | " + " | ".join(parts) + " |")
    lines += ["", "Cold rows: test rows whose target is never a next-item training target (its SID can still be "
              "a search answer in training).", "",
              f"{'Partial: not every run finished. ' if result['partial'] else ''}Wall time {result['wall_min']} min "
              f"on {result['machine']['cpus']} CPU cores. Command: `{result['command']}`", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Bars of search NDCG@10 and Recall@10 per method with the bootstrap 95 % CI as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = result["search"]["methods"]
    names = list(methods)
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.3 * len(names) + 2), 3.8))
    for ax, metric in zip(axes, ("ndcg@10", "recall@10")):
        ci_bars(ax, names, [methods[n]["summary"][metric] for n in names],
                ["tab:blue" if n in result["variants"] else "tab:gray" for n in names],
                f"search {metric.upper()} ({result['search']['query_origin']['n']} queries)")
    fig.suptitle("query -> item; bars: mean over seeds, error: 95 % bootstrap CI over queries", fontsize=9)
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
    ap.add_argument("--search-ratio", type=float, default=1.0,
                    help="search (query -> SID) examples per next-item example in SFT (0 = none: a control)")
    ap.add_argument("--search-rows", type=int, default=0, help="test queries scored (0 = all; smoke tests: fewer)")
    ap.add_argument("--embedder", default="",
                    help="query embedder of the dense baseline (default: the run's corpus.embed_model; none = skip)")
    ap.add_argument("--sasrec", action="store_true", help="add raygen's SASRec (one per seed) to the next-item rows")
    ap.add_argument("--sasrec-max-epochs", type=int, default=0, help="cap SASRec epochs (0 = eval.sasrec.epochs)")
    ap.add_argument("--runs-dir", default="", help="folder of the finished runs (default: <out stem>_runs beside --out)")
    ap.add_argument("--deadline", type=float, default=0, help="stop starting runs after this many seconds")
    ap.add_argument("--finished-only", action="store_true",
                    help="report the kept runs only (no training): the missing ones are listed in the report")
    a = ap.parse_args()
    variants, seeds = variants_and_seeds(ap, a)
    if a.search_ratio < 0:
        ap.error("--search-ratio must be >= 0")
    setup_logging(False)
    t0 = time.time()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    run, out = Path(a.run), Path(a.out)
    d = Data(run)
    queries = read_parquet(run / "corpus/queries.parquet")
    item_ids = np.asarray(d.codes.column("item_id").to_numpy(), dtype=np.int64)

    # the test queries and the baselines, once (a tokenizer with the SID tokens: the rows' prompts, the catalog)
    lm, tok = load(a.model_dir, 1, torch.device("cpu"))
    add_sid_tokens(lm, tok, [r["token"] for r in d.token_rows])
    del lm
    srows, texts = search_rows(queries, d.codes, tok, sft_tasks(a, "mean", 0), "test", a.search_rows, 0)
    origin = query_origin(queries)[srows.row_ids]
    search_rows_of, base_info = search_baselines(run, d.items, texts, srows.targets, item_ids, a)
    search_rows_of = {k: [v] for k, v in search_rows_of.items()}
    origins = origin_counts(queries, srows.row_ids)
    print(f"[search] {len(texts)} test queries ({origins['teacher']} teacher, {origins['fallback']} fallback); "
          f"baselines {json.dumps(base_info)}", flush=True)

    settings = settings_of(a, seeds, device)
    settings.update(search_ratio=a.search_ratio, search_rows=a.search_rows, search_task=(
        "STAR query2sid: train-split queries of corpus/queries.parquet mixed into the sequence SFT by "
        "raygen.tasks.build_sft_examples; early stopping on next-item valid NDCG@10 only"),
        search_eval="raygen.eval.stage.search_rankings (first query2sid template, constrained beam search, top 10)",
        data_digest=data_digest(d, queries))
    if (run / "config.yaml").exists():
        from raygen.config import load_config

        sc = load_config(run / "config.yaml").sids
        settings["sids"] = f"{sc.method} {sc.levels} x {sc.codebook_size} (the run's sids config)"
    fingerprint = json.dumps({k: v for k, v in settings.items() if k != "seeds"}, sort_keys=True, default=str)
    per_variant = {v: {"runs": []} for v in variants}
    next_rows: dict[str, list] = {v: [] for v in variants}
    seen: dict[str, list] = {}
    scored = base_next = None

    def write(partial: bool) -> dict:
        done = [v for v in variants if next_rows[v]]
        srch = {m: search_rows_of[m] for m in [*done, *[b for b in search_rows_of if b not in VARIANTS]]}
        nxt = {**{v: next_rows[v] for v in done}, **{b: r["rows"] for b, r in (base_next or {}).items()}}
        cold = cold_rows(d.samples, *scored) if scored is not None else None
        result = {
            "search": {"query_origin": origins, "methods": {m: {"summary": summarize(r, SEARCH_METRICS)}
                                                            for m, r in srch.items()},
                       "differences": differences({v: srch[v] for v in done},
                                                  {b: {"rows": srch[b]} for b in srch if b not in done}),
                       "slices_by_origin": slice_summaries(srch, {"teacher": origin == "teacher",
                                                                  "fallback": origin == "fallback"}, SEARCH_METRICS),
                       "seen_in_search_training": {v: seen[v] for v in done if v in seen},
                       "baselines": base_info, "note": queries_note(origins)},
            "next_item": {"n_rows": 0 if scored is None else len(scored[1]),
                          "methods": {m: {"summary": summarize(r)} for m, r in nxt.items()},
                          "slices": cold_warm(nxt, cold) if cold is not None else {}},
            "variants": {v: per_variant[v] for v in done}, "partial": partial or bool(missing),
            "missing_runs": missing, "settings": settings,
            "wall_min": round((time.time() - t0) / 60, 1), "command": command(SCRIPT), "machine": machine()}
        write_outputs(out, result, markdown(result))
        return result

    missing: list[str] = []
    for seed, name in seed_major(variants, seeds, a.deadline, t0):
        got = finished_run(a, name, seed, fingerprint, d, d, device,
                           train_kw={"search_ratio": a.search_ratio, "queries": queries},
                           after=search_scorer(a, name, seed, queries, d.codes))
        if got is None:  # --finished-only: not kept yet
            missing.append(f"{name} seed {seed}")
            continue
        (rec, r, topk, row_ids, targets, _), _ = got
        if scored is not None and not np.array_equal(scored[0], row_ids):
            raise RuntimeError("variants were scored on different next-item test rows")
        if scored is None:
            scored = (row_ids, targets)
            histories = [list(h) for h in d.samples.column("history").take(pa.array(row_ids)).to_pylist()]
            base_next = baseline_rows(d.samples, Catalog.from_codes(d.codes, tok), EvalConfig(),
                                      seeds if a.sasrec else [], targets, histories, a.sasrec_max_epochs,
                                      run_embeddings(run))
            if not a.sasrec:
                del base_next["sasrec"]
        x = load_extra(run_file(a, name, seed))
        if not np.array_equal(x["search_row_ids"], srows.row_ids):
            raise RuntimeError(f"{name} seed {seed} was scored on other search test queries than the baselines")
        sr = search_per_row(x["search_topk"], x["search_targets"])
        lib = search_table(x["search_topk"], x["search_targets"], item_ids, SEARCH_KS)
        assert all(np.isclose(sr[m].mean(), lib[m]) for m in SEARCH_METRICS), "per-row metrics != eval stage's"
        trained = np.isin(srows.targets, list(search_trained_items(d, queries, a, name, seed)))
        seen.setdefault(name, []).append(
            {"seed": seed, "n_seen": int(trained.sum()), "n_unseen": int((~trained).sum()),
             **{f"{m}_{p}": float(sr[m][mask].mean()) if mask.any() else None
                for m in ("ndcg@10", "recall@10") for p, mask in (("seen", trained), ("unseen", ~trained))}})
        per_variant[name]["runs"].append({**rec, "search": lib, "search_seconds": float(x["search_seconds"])})
        next_rows[name].append(r)
        search_rows_of.setdefault(name, []).append(sr)
        settings["precision"] = f"bf16={rec['precision']['bf16']} ({rec['precision']['reason']})"
        settings["test_rows_used"] = len(targets)
        write(partial=True)
        print(f"[search] {name} seed {seed}: search ndcg@10 {lib['ndcg@10']:.4f} recall@10 {lib['recall@10']:.4f}; "
              f"next-item ndcg@10 {rec['ndcg@10']:.4f} ({rec['wall_s']}s, total {time.time() - t0:.0f}s)", flush=True)
    if scored is None:
        raise SystemExit("no run finished (--deadline?)")
    result = write(partial=any(len(next_rows[v]) < len(seeds) for v in variants))
    plot(result, out.with_suffix(".png"))
    print(markdown(result))


if __name__ == "__main__":
    main()
