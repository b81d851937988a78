"""Throughput of raygen's constrained beam search vs HF ``generate`` + ``prefix_allowed_tokens_fn``.

Same model (SmolLM2-135M-Instruct with the Industrial SID tokens added; their embedding rows are
random, which is fine for throughput), same prompts, same beam width, same catalog:

- raygen:   ``raygen.generation.beam.constrained_beam_search`` (prompt encoded once per row, KV cache
            expanded to the beams, allowed tokens of all beams by one tensor lookup per step);
- baseline: ``model.generate(num_beams=W, prefix_allowed_tokens_fn=f)`` where ``f`` looks the
            beam's generated prefix up in a Python dict trie (called once per beam per step).

The reference SIDs of the catalog collide a little; both methods use the deduplicated catalog
that keeps the FIRST item (lowest id) of every SID. Both rank by the sum of full-vocabulary
log-probabilities (``length_penalty=0`` for HF), so their top-1 items should agree.

    .venv/bin/python -m benchmarks.eval_throughput --rows 32 --beam-width 10
"""
from __future__ import annotations

import argparse
import ast
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from raygen.generation.beam import constrained_beam_search  # noqa: E402
from raygen.generation.trie import SidTrie  # noqa: E402
from raygen.provenance import write_result  # noqa: E402
from raygen.models import resolve_lm  # noqa: E402

PROMPT = ("Here is a user's purchase history, oldest first: {history}. "
          "Predict the semantic ID of the next item the user will buy.")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_catalog(path: Path) -> tuple[list[int], list[list[str]], int]:
    """(item ids, SID token strings) keeping the first item per SID; also the number of dropped items."""
    raw = json.loads(path.read_text())
    seen: dict[tuple[str, ...], int] = {}
    for item in sorted(raw, key=int):
        seen.setdefault(tuple(raw[item]), int(item))
    items = sorted(seen.items(), key=lambda kv: kv[1])
    return [i for _, i in items], [list(s) for s, _ in items], len(raw) - len(items)


def load_histories(path: Path, rows: int, max_history: int) -> list[list[str]]:
    out = []
    with open(path, newline="") as f:
        for line_no, rec in enumerate(csv.DictReader(f), start=2):
            try:
                hist = ast.literal_eval(rec["history_item_sid"])
            except (ValueError, SyntaxError) as e:
                raise ValueError(f"{path}:{line_no}: field history_item_sid is not a list literal: {e}") from e
            out.append(hist[-max_history:])
            if len(out) == rows:
                break
    return out


def build_model(tokens: list[str], seed: int):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_lm("smollm2")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    n_old = len(tok)
    tok.add_tokens(tokens)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    emb = model.get_input_embeddings().weight
    with torch.no_grad():  # random rows with the scale of the trained ones (tied lm_head shares them)
        g = torch.Generator().manual_seed(seed)
        emb[n_old:] = torch.randn(emb[n_old:].shape, generator=g) * emb[:n_old].std()
    return tok, model.eval()


def baseline_search(model, tok, prompts: list[list[int]], trie: dict, leaf: dict, beam_width: int,
                    batch_size: int, pad_id: int) -> tuple[list[list[int]], list[list[float]]]:
    """HF beam search constrained by a per-beam Python dict-trie lookup."""
    items, scores = [], []
    for s in range(0, len(prompts), batch_size):
        batch = prompts[s:s + batch_size]
        width = max(map(len, batch))
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])

        def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
            return trie[tuple(sent[width:].tolist())]

        out = model.generate(input_ids=ids, attention_mask=mask, num_beams=beam_width,
                             num_return_sequences=beam_width, max_new_tokens=len(next(iter(leaf))),
                             do_sample=False, length_penalty=0.0, early_stopping=True,
                             prefix_allowed_tokens_fn=allowed, pad_token_id=pad_id,
                             return_dict_in_generate=True, output_scores=True)  # for sequences_scores
        seq = out.sequences[:, width:].view(len(batch), beam_width, -1)
        sc = out.sequences_scores.view(len(batch), beam_width)
        for r in range(len(batch)):
            items.append([leaf.get(tuple(x), -1) for x in seq[r].tolist()])
            scores.append(sc[r].tolist())
    return items, scores


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=32, help="test rows to decode (the first N of test.csv)")
    ap.add_argument("--beam-width", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8, help="rows per batch, both methods")
    ap.add_argument("--max-history", type=int, default=10, help="most recent history items in the prompt")
    ap.add_argument("--bf16", action="store_true", help="raygen under bf16 autocast (baseline stays fp32)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared/data/amazon18-industrial")
    ap.add_argument("--out", type=Path, required=True, help="the result file (JSON; committed results live in benchmarks/results/)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    item_ids, sids, n_dupes = load_catalog(args.data_dir / "reference_sids.json")
    tokens = sorted({t for s in sids for t in s})
    tok, model = build_model(tokens, args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    sid_matrix = torch.tensor([tok.convert_tokens_to_ids(s) for s in sids])
    histories = load_histories(args.data_dir / "test.csv", args.rows, args.max_history)
    prompts = [tok.apply_chat_template([{"role": "user", "content": PROMPT.format(history=", ".join(h))}],
                                       add_generation_prompt=True, tokenize=True, return_dict=False)
               for h in histories]
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    rows = sid_matrix.tolist()
    trie: dict[tuple[int, ...], list[int]] = {}
    for r in rows:
        for t in range(len(r)):
            trie.setdefault(tuple(r[:t]), set()).add(r[t])
    trie = {k: sorted(v) for k, v in trie.items()}
    leaf = {tuple(r): i for i, r in enumerate(rows)}
    sid_trie = SidTrie.build(sid_matrix)
    autocast = torch.bfloat16 if args.bf16 else None
    W, B = args.beam_width, args.batch_size

    def run_raygen():
        return constrained_beam_search(model, prompts, sid_matrix, W, pad_id, B, autocast_dtype=autocast,
                                       trie=sid_trie)

    def run_baseline():
        with torch.inference_mode():
            return baseline_search(model, tok, prompts, trie, leaf, W, B, pad_id)

    # warm up both (allocator, kernels) on one batch
    constrained_beam_search(model, prompts[:B], sid_matrix, W, pad_id, B, autocast_dtype=autocast, trie=sid_trie)
    with torch.inference_mode():
        baseline_search(model, tok, prompts[:B], trie, leaf, W, B, pad_id)

    t0 = time.perf_counter()
    r_items, r_scores = run_raygen()
    t_raygen = time.perf_counter() - t0
    t0 = time.perf_counter()
    b_items, b_scores = run_baseline()
    t_base = time.perf_counter() - t0

    n = len(prompts)
    top1_agree = sum(int(r_items[i, 0]) == b_items[i][0] for i in range(n)) / n
    top1_score_diff = max(abs(float(r_scores[i, 0]) - b_scores[i][0]) for i in range(n))
    set_overlap = sum(len(set(r_items[i].tolist()) & set(b_items[i])) for i in range(n)) / (n * W)
    base_invalid = sum(x < 0 for row in b_items for x in row)
    result = {
        "raygen_rows_per_s": round(n / t_raygen, 3),
        "baseline_rows_per_s": round(n / t_base, 3),
        "speedup": round(t_base / t_raygen, 2),
        "raygen_seconds": round(t_raygen, 3),
        "baseline_seconds": round(t_base, 3),
        "top1_agreement": top1_agree,
        "top1_max_abs_score_diff": top1_score_diff,
        "topk_set_overlap": round(set_overlap, 4),
        "baseline_invalid": base_invalid,
        "settings": {
            "rows": n, "beam_width": W, "batch_size": B, "max_history": args.max_history, "bf16": args.bf16,
            "device": device, "torch_threads": torch.get_num_threads(), "model": "SmolLM2-135M-Instruct",
            "catalog_items": len(item_ids), "items_dropped_as_sid_duplicates": n_dupes,
            "sid_levels": sid_matrix.shape[1], "sid_tokens_added": len(tokens),
            "mean_prompt_tokens": round(sum(map(len, prompts)) / n, 1),
            "torch": torch.__version__, "transformers": __import__("transformers").__version__,
            "cpu": _cpu_name(), "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    write_result(args.out, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
