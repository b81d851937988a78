"""Pure builders of SFT examples: ``{"task", "messages", "answer"}`` dicts, chat messages without the answer.

- :func:`seqrec_examples`: a user's history SIDs -> the next item's SID;
- :func:`alignment_examples`: STAR's bidirectional item text <-> SID alignment;
- :func:`token_align_examples`: TS-Align, one SID token <-> its cluster's description/keywords;
- :func:`search_examples`: STAR's search task, a shopper's query -> the item's SID;
- :func:`mix` / :func:`build_sft_examples`: mix alignment tasks into the seqrec SFT data.

Inputs are the pipeline's Arrow tables (``raygen.data.schema`` samples/items, the sids stage's
``codes``/``tokens``). Records that cannot make an example (no SID, empty text, ...) are counted in
an optional :class:`~raygen.data.schema.SkipLog`, never dropped silently. Randomness (template
choice, sampling, order) comes from ``cfg.seed`` only.
"""
from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from raygen.data.schema import SkipLog
from raygen.lm.vocab import sid_text, sid_token
from raygen.tasks.config import TasksConfig
from raygen.tasks.sequence import SidIds, encode_sequence, sequence_examples
from raygen.tasks.templates import ANSWER_TITLEDESC, SEARCH_TASK

_SPACES = re.compile(r"\s+")


def clean_text(text: str | None, max_chars: int) -> str:
    """Collapse whitespace and cut to ``max_chars`` (at a word boundary when one is near)."""
    text = _SPACES.sub(" ", text or "").strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return cut[:space] if space > max_chars // 2 else cut


def sids_by_item(codes: pa.Table) -> dict[int, str]:
    """``item_id -> SID text`` from a sids-stage ``codes`` table."""
    return {r["item_id"]: sid_text(r["codes"]) for r in codes.select(["item_id", "codes"]).to_pylist()}


def items_by_id(items: pa.Table) -> dict[int, dict]:
    """``item_id -> item row`` from an items table."""
    return {r["item_id"]: r for r in items.to_pylist()}


class _Maker:
    """Renders one task's prompt from a randomly drawn template into chat messages."""

    def __init__(self, cfg: TasksConfig, salt: int):
        self.cfg = cfg
        self.templates = cfg.all_templates()
        self.rng = np.random.default_rng([cfg.seed, salt])

    def __call__(self, task: str, answer: str, **fields) -> dict:
        options = self.templates[task]
        prompt = options[int(self.rng.integers(len(options)))].format(**fields)
        messages = [{"role": "system", "content": self.cfg.system_prompt}] if self.cfg.system_prompt else []
        messages.append({"role": "user", "content": prompt})
        return {"task": task, "messages": messages, "answer": answer}


def _skip(skips: SkipLog | None, reason: str, where: str) -> None:
    if skips is not None:
        skips.add(reason, where)


def seqrec_examples(samples: pa.Table, sids: dict[int, str], cfg: TasksConfig, split: str | None = "train",
                    skips: SkipLog | None = None) -> list[dict]:
    """One example per sample of ``split`` (None = all): last ``cfg.max_history`` history SIDs -> target SID."""
    make = _Maker(cfg, salt=1)
    out = []
    for i, s in enumerate(samples.to_pylist()):
        if split is not None and s["split"] != split:
            continue
        where = f"samples row {i} (user {s['user_id']})"
        history = list(s["history"] or [])[-cfg.max_history:]
        missing = [h for h in history + [s["target"]] if h not in sids]
        if missing:
            _skip(skips, "seqrec: item without SID", f"{where}: item {missing[0]}")
            continue
        if not history:
            _skip(skips, "seqrec: empty history", where)
            continue
        out.append(make("seqrec", sids[s["target"]], history=cfg.history_sep.join(sids[h] for h in history)))
    return out


def alignment_examples(items: pa.Table, sids: dict[int, str], cfg: TasksConfig,
                       skips: SkipLog | None = None) -> list[dict]:
    """STAR alignment: for every item with a SID, one example per direction in ``cfg.align_directions``."""
    make = _Maker(cfg, salt=2)
    out = []
    for r in items.to_pylist():
        where = f"item {r['item_id']}"
        if r["item_id"] not in sids:
            _skip(skips, "align: item without SID", where)
            continue
        sid = sids[r["item_id"]]
        title = clean_text(r.get("title"), cfg.max_text_chars)
        desc = clean_text(r.get("description"), cfg.max_text_chars)
        for d in cfg.align_directions:
            needs_title, needs_desc = "title" in d, "desc" in d
            if (needs_title and not title) or (needs_desc and not desc):
                _skip(skips, f"align {d}: empty {'title' if needs_title and not title else 'description'}", where)
                continue
            answer = {"sid2title": title, "sid2desc": desc,
                      "sid2titledesc": ANSWER_TITLEDESC.format(title=title, description=desc)}.get(d, sid)
            out.append(make(d, answer, sid=sid, title=title, description=desc))
    return out


def token_align_examples(tokens: pa.Table | list[dict], cfg: TasksConfig,
                         skips: SkipLog | None = None) -> list[dict]:
    """TS-Align: per SID token, token -> cluster description (keywords when it has none) and back."""
    make = _Maker(cfg, salt=3)
    rows = tokens.to_pylist() if isinstance(tokens, pa.Table) else tokens
    out = []
    for r in rows:
        token = sid_token(r["level"], r["code"])
        keywords = ", ".join(k.strip() for k in (r.get("keywords") or []) if k and k.strip())
        desc = clean_text(r.get("description") or keywords, cfg.max_text_chars)
        if not desc:
            _skip(skips, "token align: no description or keywords", token)
            continue
        fields = {"token": token, "level": r["level"] + 1, "description": desc, "keywords": keywords or desc}
        for d in cfg.token_directions:
            out.append(make(d, desc if d == "token2desc" else token, **fields))
    return out


def search_examples(queries: pa.Table, sids: dict[int, str], cfg: TasksConfig, split: str = "train",
                    skips: SkipLog | None = None) -> list[dict]:
    """STAR's search task: one example per query of ``split`` (the corpus stage's ``queries.parquet``):
    query -> the item's SID. Queries of items without a SID are counted as skipped."""
    make = _Maker(cfg, salt=5)
    out = []
    for r in queries.select(["item_id", "query", "split"]).to_pylist():
        if r["split"] != split:
            continue
        if r["item_id"] not in sids:
            _skip(skips, "search: item without SID", f"item {r['item_id']}")
            continue
        out.append(make(SEARCH_TASK, sids[r["item_id"]], query=clean_text(r["query"], cfg.max_text_chars)))
    return out


def search_prompt(query: str, cfg: TasksConfig) -> list[dict]:
    """Chat messages of an evaluation / ``recommend`` search prompt: the first ``query2sid`` template."""
    prompt = cfg.all_templates()[SEARCH_TASK][0].format(query=clean_text(query, cfg.max_text_chars))
    messages = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
    return messages + [{"role": "user", "content": prompt}]


def sample_examples(examples: list[dict], n: int, rng: np.random.Generator) -> list[dict]:
    """``n`` examples: whole shuffled passes over ``examples`` while n exceeds their count, then a sample."""
    if n <= 0 or not examples:
        return []
    reps, rest = divmod(n, len(examples))
    picks = [rng.permutation(len(examples)) for _ in range(reps)]
    picks.append(rng.choice(len(examples), size=rest, replace=False))
    return [examples[i] for i in np.concatenate(picks)]


def mix(examples_a: list[dict], examples_b: list[dict], ratio: float, seed: int) -> list[dict]:
    """All of ``examples_a`` plus ``round(ratio * len(a))`` of ``examples_b``, shuffled together."""
    if ratio < 0:
        raise ValueError(f"mix ratio must be >= 0, got {ratio}")
    rng = np.random.default_rng(seed)
    merged = list(examples_a) + sample_examples(examples_b, round(ratio * len(examples_a)), rng)
    return [merged[i] for i in rng.permutation(len(merged))]


def build_sft_examples(samples: pa.Table, items: pa.Table, codes: pa.Table, tokens: pa.Table | None,
                       cfg: TasksConfig, split: str = "train", skips: SkipLog | None = None,
                       queries: pa.Table | None = None) -> list[dict]:
    """The SFT mixture of ``split``: seqrec (in ``cfg.seqrec_format``), plus, for the train split, item
    alignment (``align_ratio`` per seqrec example), token alignment (``token_ratio``) and search
    (``search_ratio``, from ``queries``' train split). Shuffled."""
    sids = sids_by_item(codes)
    if cfg.seqrec_format == "sequence":
        seq = sequence_examples(samples, sids, cfg, split=split, skips=skips)
    else:
        seq = seqrec_examples(samples, sids, cfg, split=split, skips=skips)
    if split != "train":
        return seq
    rng = np.random.default_rng([cfg.seed, 4])
    extra = sample_examples(alignment_examples(items, sids, cfg, skips), round(cfg.align_ratio * len(seq)), rng)
    if tokens is not None:
        extra += sample_examples(token_align_examples(tokens, cfg, skips), round(cfg.token_ratio * len(seq)), rng)
    if cfg.search_ratio > 0:
        if queries is None:
            raise ValueError("tasks.search_ratio > 0 needs the corpus stage's queries (corpus.n_queries > 0)")
        extra += sample_examples(search_examples(queries, sids, cfg, "train", skips),
                                 round(cfg.search_ratio * len(seq)), rng)
    merged = seq + extra
    return [merged[i] for i in rng.permutation(len(merged))]


def next_item_prompt_ids(tokenizer, histories: list[list[int]], sids: dict[int, str], cfg: TasksConfig
                         ) -> list[list[int]]:
    """Generation prompts (token ids) of ``histories`` in the format the model was trained on.

    Sequence format: ``prefix + SIDs of the last max_history items`` (the start of a training row);
    prompt format: the chat prompt of a seqrec example (template drawn as in training). Every history
    item must have a SID (callers check and count first).
    """
    if cfg.seqrec_format == "sequence":
        ids = SidIds(tokenizer)
        return [encode_sequence(ids, cfg.sequence_prefix, [sids[h] for h in hist[-cfg.max_history:]])["input_ids"]
                for hist in histories]
    from raygen.data.schema import samples_table
    from raygen.tasks.encode import encode_prompt

    # seqrec_examples needs a target; only the prompt messages are used.
    table = samples_table([{"user_id": "prompt", "history": list(h), "target": h[-1], "split": "x"}
                           for h in histories])
    return [encode_prompt(tokenizer, ex["messages"]) for ex in seqrec_examples(table, sids, cfg, split=None)]
