"""Small fixtures shared by the benchmarks that must run anywhere in minutes (``fault_tolerance.py``,
``scaling.py``): a tiny random Llama on SmolLM2-135M-Instruct's real tokenizer and chat template,
SID tokens added to any HF folder, next-item examples and prompts, a random SID catalog, an items table.
"""
from __future__ import annotations

from pathlib import Path

SID_TOKENS = [f"<{level}_{c}>" for level in "abc" for c in range(8)]
"""3 levels x 8 codes: up to 512 distinct SIDs."""


def tiny_model(out: Path) -> Path:
    """A tiny random Llama with SmolLM2's tokenizer (no SID tokens: the lm stage adds them)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from raygen.models import smollm2_path

    tok = AutoTokenizer.from_pretrained(smollm2_path(), local_files_only=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def with_sid_tokens(src: str | Path, out: Path):
    """``src`` (any HF causal-LM folder) with :data:`SID_TOKENS` added, saved to ``out`` (``out`` may be
    ``src``); returns (out, tokenizer, SID token ids)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from raygen.lm.vocab import add_sid_tokens

    model, tok = AutoModelForCausalLM.from_pretrained(src), AutoTokenizer.from_pretrained(src)
    sid_ids = add_sid_tokens(model, tok, SID_TOKENS).tolist()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return Path(out), tok, sid_ids


def examples(tok, n: int, seed: int = 0) -> list[dict]:
    """``n`` encoded next-item examples (4 random SIDs of history -> 1 random SID answer, chat template)."""
    import numpy as np

    from raygen.tasks.encode import encode_example

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        hist = " ".join("".join(SID_TOKENS[lv * 8 + int(rng.integers(8))] for lv in range(3)) for _ in range(4))
        answer = "".join(SID_TOKENS[lv * 8 + int(rng.integers(8))] for lv in range(3))
        messages = [{"role": "user", "content": f"The user bought {hist}. What is the next item?"}]
        out.append(encode_example(tok, messages, answer, max_len=256))
    return out


def prompts(tok, n: int, seed: int = 0) -> list[list[int]]:
    """The chat prompts of :func:`examples` (the answer's 3 SID ids and EOS cut off)."""
    return [ex["input_ids"][:-4] for ex in examples(tok, n, seed)]


def catalog(sid_ids: list[int], rng, n: int):
    """``n`` distinct random SID rows (n <= 512) as an [n, 3] array of token ids."""
    import numpy as np

    codes = rng.permutation(512)[:n]
    return np.array([[sid_ids[lv * 8 + (c >> (3 * (2 - lv))) % 8] for lv in range(3)] for c in codes])


def items(n: int):
    """An items table (``raygen.data.schema.items_table``) of ``n`` short synthetic tool items."""
    from raygen.data.schema import items_table

    return items_table([{"item_id": 100 + 3 * i, "title": f"item {i} steel drill {i % 7}", "brand": "acme",
                         "categories": ["tools"], "description": f"A tool number {i}."} for i in range(n)])
