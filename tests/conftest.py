"""Shared test fixtures: a tiny offline tokenizer, tiny Llama models, a tiny catalog. No downloads.

Stable names (other test files rely on them):

- ``tiny_tokenizer``: a FRESH ``PreTrainedTokenizerFast`` per test (byte-level BPE, ~600 ids, trained
  offline in ~0.1 s once per session) with special tokens ``<|endoftext|>`` (unk/bos), ``<|im_start|>``,
  ``<|im_end|>`` (= eos), ``<pad>`` (= pad) and a ChatML-like Jinja ``chat_template``. Fresh because
  tests add SID tokens to it.
- ``tiny_tokenizer_json``: the trained ``tokenizers`` JSON (session), if you need to build your own.
- ``tiny_llama``: factory ``tiny_llama(vocab_size=None, tie_word_embeddings=True, seed=0, **config)``
  -> a new ``LlamaForCausalLM`` (2 layers, hidden 64, 4 heads, intermediate 128, vocab = tokenizer size
  by default), in eval mode. Extra keyword arguments go to ``LlamaConfig``.
- ``tiny_model_dir``: a folder with ``save_pretrained`` of a tied tiny Llama and the tiny tokenizer
  (session scoped: treat it as READ-ONLY; load it with ``from_pretrained``).
- ``scripted_teacher_dir``: a folder holding a 1-layer Llama (and the tiny tokenizer) whose greedy
  answer to ANY chat prompt is exactly ``SCRIPTED_REPLY`` then ``<|im_end|>``: a real model on the real
  teacher path (HFBackend, Ray Data KeywordActor) that yields parseable keywords. Session, read-only.
- ``tiny_catalog``: dict of Arrow tables ``items`` (ITEMS_SCHEMA), ``samples`` (SAMPLES_SCHEMA),
  ``codes`` (item_id, codes list<int32>, 3 levels), ``tokens`` (level, code, token, keywords,
  description: 4 codes per level, like the sids stage's tokens.parquet). Session scoped, read-only.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ADJECTIVES = ("red blue green black white small large light heavy soft warm cool classic modern waterproof "
              "wireless portable durable organic premium cotton leather steel wooden plastic glass silver "
              "golden vintage compact electric rechargeable stainless comfortable lightweight").split()
NOUNS = ("shoes boots sneakers jacket shirt dress hat gloves socks scarf wallet bag backpack watch phone "
         "charger cable speaker headphones camera lamp chair table desk pillow blanket towel mug cup bottle "
         "pan knife spoon plate bowl kettle blender toaster coffee tea book novel pen notebook guitar drum "
         "ball racket bike helmet tent lantern toy puzzle game candle soap shampoo brush").split()
FILLER = ("the a an and or of for with to in on is are this that user item items next title description "
          "which what give predict recommend history bought has interacted these order here code level "
          "kind stand group described product products answer id its then sequence purchase matches "
          "describe grouped under like").split()


def _corpus() -> list[str]:
    lines = []
    for i, (adj, noun) in enumerate(itertools.product(ADJECTIVES, NOUNS)):
        f = FILLER[i % len(FILLER)]
        lines.append(f"{f} {adj} {noun} {FILLER[(i * 7) % len(FILLER)]} {noun}.")
    return lines + [" ".join(FILLER)] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    return tok.to_str()


def make_tiny_tokenizer(tokenizer_json: str):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tokenizer_json), bos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<pad>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


@pytest.fixture
def tiny_tokenizer(tiny_tokenizer_json):
    return make_tiny_tokenizer(tiny_tokenizer_json)


@pytest.fixture(scope="session")
def random_sid_matrix():
    """``make(n_items, codes, levels, base, seed=1)``: [n_items, levels] distinct random SIDs; level l's
    tokens are ``base + codes * l + code`` (the layout of the SID tokens appended to a vocabulary)."""
    import torch

    def make(n_items: int, codes: int, levels: int, base: int, seed: int = 1):
        g = torch.Generator().manual_seed(seed)
        flat = torch.randperm(codes ** levels, generator=g)[:n_items]
        digits = torch.stack([(flat // codes ** (levels - 1 - lv)) % codes for lv in range(levels)], 1)
        return digits + base + codes * torch.arange(levels)

    return make


@pytest.fixture(scope="session")
def tiny_llama(tiny_tokenizer_json):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    default_vocab = len(make_tiny_tokenizer(tiny_tokenizer_json))

    def make(vocab_size: int | None = None, tie_word_embeddings: bool = True, seed: int = 0, **config):
        torch.manual_seed(seed)
        cfg = LlamaConfig(vocab_size=vocab_size or default_vocab, hidden_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=4, intermediate_size=128,
                          max_position_embeddings=512, tie_word_embeddings=tie_word_embeddings,
                          bos_token_id=0, eos_token_id=2, pad_token_id=3, **config)
        return LlamaForCausalLM(cfg).eval()

    return make


@pytest.fixture(scope="session")
def vllm_model_dir(tmp_path_factory) -> str:
    """A tiny random Llama (vocabulary 128, pad 3, eos 2) whose head size (64) vLLM's CPU attention supports
    (the 16 of :func:`tiny_llama` is not): the model of the vLLM tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=256, max_position_embeddings=256,
                      tie_word_embeddings=True, initializer_range=0.2, bos_token_id=0, eos_token_id=2,
                      pad_token_id=3)
    path = tmp_path_factory.mktemp("vllm_model")
    LlamaForCausalLM(cfg).eval().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_llama, tiny_tokenizer_json) -> Path:
    path = tmp_path_factory.mktemp("tiny_model")
    tiny_llama().save_pretrained(path)
    make_tiny_tokenizer(tiny_tokenizer_json).save_pretrained(path)
    return path


SCRIPTED_REPLY = "leather wallet, steel knife"


def scripted_llama(tokenizer, reply: str):
    """A 1-layer tied-off Llama that, after the generation prompt, greedily emits ``reply`` + EOS.

    Attention and MLP outputs are zeroed (o_proj, down_proj = 0), so the last hidden state is the
    current token's embedding: a bigram model. The prompt's last token and each reply token get
    orthonormal embedding directions e_i, and the (untied) head row of the next token is 10 e_i, so
    token i is followed by token i + 1 whatever came before. Reply tokens must be distinct."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    chain = [prompt[-1], *tokenizer(reply, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    assert len(set(chain)) == len(chain), "reply tokens must be distinct (and differ from the prompt's last)"
    hidden = 64
    # one head of size 64: vLLM's CPU attention has no kernel for size 16 (attention is zeroed anyway)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=1, num_attention_heads=1,
                      num_key_value_heads=1, intermediate_size=128, max_position_embeddings=512,
                      tie_word_embeddings=False, bos_token_id=0, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.norm.weight.fill_(1.0)
        model.model.layers[0].input_layernorm.weight.fill_(1.0)
        model.model.layers[0].post_attention_layernorm.weight.fill_(1.0)
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        for i, (cur, nxt) in enumerate(zip(chain, chain[1:])):
            emb[cur, i] = 1.0
            head[nxt, i] = 10.0
    return model


@pytest.fixture(scope="session")
def scripted_reply() -> str:
    """What the ``scripted_teacher_dir`` model answers to any chat prompt. A fixture, not an import:
    ``from conftest import ...`` resolves to whichever conftest module pytest loaded first."""
    return SCRIPTED_REPLY


@pytest.fixture(scope="session")
def scripted_teacher_dir(tmp_path_factory, tiny_tokenizer_json) -> Path:
    path = tmp_path_factory.mktemp("scripted_teacher")
    tok = make_tiny_tokenizer(tiny_tokenizer_json)
    scripted_llama(tok, SCRIPTED_REPLY).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_catalog() -> dict[str, pa.Table]:
    from raygen.data.schema import items_table, samples_table

    n_items, levels, k = 12, 3, 4
    items = items_table([{
        "item_id": 100 + i,
        "title": f"{ADJECTIVES[i]} {NOUNS[i]}",
        "description": "" if i == 5 else f"A {ADJECTIVES[i + 1]} {NOUNS[i]} for the {NOUNS[i + 12]}.",
        "brand": "acme", "categories": ["home"]} for i in range(n_items)])
    codes = [[i % k, (i // k) % k, i % 3] for i in range(n_items)]  # unique rows, all codes used
    codes_tbl = pa.table({"item_id": pa.array([100 + i for i in range(n_items)], pa.int64()),
                          "codes": pa.array(codes, pa.list_(pa.int32()))})
    rows = []
    for level in range(levels):
        for code in range(k):
            words = [NOUNS[(level * k + code) % len(NOUNS)], ADJECTIVES[(level * k + code) % len(ADJECTIVES)]]
            rows.append({"level": level, "code": code, "token": f"<{'abc'[level]}_{code}>", "keywords": words,
                         "description": "" if (level, code) == (2, 3) else f"{words[1]} {words[0]} items"})
    rows[-1]["keywords"] = []  # <c_3>: no keywords and no description
    tokens = pa.Table.from_pylist(rows, schema=pa.schema([
        ("level", pa.int32()), ("code", pa.int32()), ("token", pa.string()),
        ("keywords", pa.list_(pa.string())), ("description", pa.string())]))
    samples = samples_table([
        {"user_id": "u1", "history": [100, 101, 102], "target": 103, "split": "train"},
        {"user_id": "u1", "history": [100, 101, 102, 103], "target": 104, "split": "valid"},
        {"user_id": "u2", "history": [105], "target": 106, "split": "train"},
        {"user_id": "u2", "history": [105, 106], "target": 107, "split": "test"},
        {"user_id": "u3", "history": [108, 109, 110, 111, 100, 101], "target": 102, "split": "train"},
        {"user_id": "u4", "history": [], "target": 100, "split": "train"},
        {"user_id": "u5", "history": [999], "target": 100, "split": "train"},
    ])
    return {"items": items, "samples": samples, "codes": codes_tbl, "tokens": tokens}


@pytest.fixture
def tiny_run_dir(tmp_path, tiny_catalog) -> Path:
    """A run folder as the data, corpus and sids stages leave it (data/items, data/samples, corpus/embeddings:
    seeded random 8-d vectors, sids/codes, sids/tokens) for :data:`tiny_catalog`, its samples limited to rows
    whose items all have SIDs (benchmarks/*_local.py)."""
    from raygen.io import write_parquet

    run = tmp_path / "run"
    for name, folder in (("items", "data"), ("codes", "sids"), ("tokens", "sids")):
        write_parquet(run / folder / f"{name}.parquet", tiny_catalog[name])
    ids = tiny_catalog["items"].column("item_id").to_numpy()
    vecs = np.random.default_rng(0).normal(size=(len(ids), 8)).astype(np.float32)
    write_parquet(run / "corpus/embeddings.parquet", pa.table(
        {"item_id": pa.array(ids, pa.int64()), "embedding": pa.array(list(vecs), pa.list_(pa.float32(), 8))}))
    known = set(tiny_catalog["codes"].column("item_id").to_pylist())
    samples = tiny_catalog["samples"]
    keep = [bool(h) and set(h) <= known for h in samples.column("history").to_pylist()]
    write_parquet(run / "data/samples.parquet", samples.filter(pa.array(keep)))
    return run


@pytest.fixture
def fixture_stages():
    """:func:`_fixture_stages` as a fixture (an import of conftest may get tests/integration's)."""
    return _fixture_stages


def _fixture_stages(tables):
    """The pipeline's stages, with data/corpus/sids writing the fixture tables instead of computing them."""
    import dataclasses

    from raygen.io import write_parquet
    from raygen.pipeline import STAGES

    def data(ctx):
        write_parquet(ctx.out / "items.parquet", tables["items"])
        write_parquet(ctx.out / "samples.parquet", tables["samples"])

    def sids(ctx):
        write_parquet(ctx.out / "codes.parquet", tables["codes"])
        write_parquet(ctx.out / "tokens.parquet", tables["tokens"])

    fake = {"data": data, "corpus": lambda ctx: None, "sids": sids}
    return [dataclasses.replace(s, run=fake[s.name]) if s.name in fake else s for s in STAGES]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_dir, tiny_catalog):
    """A tiny finished run for `raygen recommend`: the real lm stage on the tiny model, pass-through
    align/sft/rl, fixture tables standing in for the data/corpus/sids stages (same names, deps and config
    sections as the pipeline's, so the stage keys are the real ones); no eval stage."""
    from raygen.config import load_config
    from raygen.pipeline import save_config
    from raygen.runner import run_stages

    run_dir = tmp_path_factory.mktemp("run")
    cfg = load_config(None, [f"run_dir={run_dir}", f"lm.model={tiny_model_dir}", "lm.init=random",
                             "align.enabled=false", "sft.enabled=false", "rl.enabled=false",
                             "tasks.sequence_prefix=You recommend products.",
                             "eval.bf16=false"])  # fp32 beam search on every CPU: scores compared to fp32 log-probs
    stages = [s for s in _fixture_stages(tiny_catalog) if s.name not in ("eval", "report")]
    summary = run_stages(cfg, stages, run_dir)
    assert summary["rl"]["status"] == "ran"
    save_config(cfg, run_dir)
    return run_dir


@pytest.fixture
def s3():
    """A local S3-compatible server on 127.0.0.1 for one test (tests/_s3.py; skipped without moto[server])."""
    from _s3 import local_s3

    with local_s3() as server:
        yield server
