"""Teacher backends: HFBackend on a tiny random Llama, fallback/vLLM wiring, truncated answers."""
from __future__ import annotations

import importlib.util

import pytest

from raygen.corpus.config import CorpusConfig
from raygen.corpus.keywords import SOURCE_FALLBACK, build_prompt, extract_keywords, fallback_keywords
from raygen.corpus.teacher import (FallbackBackend, HFBackend, VLLMBackend, drop_unfinished, make_teacher,
                                   teacher_device)

ROWS = [
    {"title": "red shoes", "brand": "acme", "categories": ["fashion"], "description": "Red shoes for the beach."},
    {"title": "steel kettle", "brand": "", "categories": [], "description": "A small steel kettle for tea."},
    {"title": "wooden desk lamp", "brand": "lumo", "categories": ["home", "lighting"], "description": ""},
]


@pytest.fixture(scope="module")
def hf_teacher(tiny_model_dir):
    return HFBackend(str(tiny_model_dir))


def test_hf_backend_generates_one_string_per_conversation(hf_teacher):
    convs = [build_prompt(r, 3) for r in ROWS]
    out = hf_teacher.generate(convs, max_new_tokens=6)
    assert isinstance(out, list) and len(out) == 3 and all(isinstance(t, str) for t in out)
    assert hf_teacher.tokenizer.padding_side == "left"
    assert hf_teacher.generate([], 6) == []
    # Only the continuation comes back, never the prompt text.
    assert not any("Give 3 short keywords" in t for t in out)


def test_hf_backend_batching_with_left_padding_matches_single_prompts(hf_teacher):
    convs = [build_prompt(r, 3) for r in ROWS]
    batched = hf_teacher.generate(convs, max_new_tokens=5)
    singles = [hf_teacher.generate([c], max_new_tokens=5)[0] for c in convs]
    assert batched == singles  # greedy + left padding + attention mask: batch-independent


def test_hf_backend_is_greedy_deterministic(hf_teacher):
    conv = [build_prompt(ROWS[0], 3)]
    assert hf_teacher.generate(conv, 8) == hf_teacher.generate(conv, 8)


def test_pipeline_falls_back_where_the_tiny_teacher_talks_garbage(hf_teacher):
    out = extract_keywords(hf_teacher, ROWS, 3, max_new_tokens=8)
    assert len(out) == 3
    # A random 2-layer model's tokens are not grounded keywords of these items: every row falls
    # back, and gets exactly the deterministic extractor's keywords.
    assert [s for _, s in out] == [SOURCE_FALLBACK] * 3
    assert [k for k, _ in out] == [fallback_keywords(r, 3) for r in ROWS]


def test_hf_backend_needs_a_chat_template(tmp_path, tiny_llama, tiny_tokenizer):
    tiny_tokenizer.chat_template = None
    tiny_tokenizer.save_pretrained(tmp_path)
    tiny_llama().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no chat_template"):
        HFBackend(str(tmp_path))


def test_hf_backend_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cannot load teacher LLM '.*nope'"):
        HFBackend(str(tmp_path / "nope"))


@pytest.mark.parametrize("text, expected", [
    ("drill, saw, ham", "drill, saw"),
    ("drill, saw, hammer,", "drill, saw, hammer"),
    ("1. drill\n2. sa", "1. drill"),
    ("no separator at all", "no separator at all"),
    ("", ""),
])
def test_drop_unfinished(text, expected):
    assert drop_unfinished(text) == expected


def test_fallback_backend_and_factory():
    fb = make_teacher(CorpusConfig(keyword_backend="fallback"))
    assert isinstance(fb, FallbackBackend) and fb.uses_llm is False
    assert fb.generate([[{"role": "user", "content": "x"}]] * 2, 4) == ["", ""]
    assert [s for _, s in extract_keywords(fb, ROWS, 3)] == [SOURCE_FALLBACK] * 3
    with pytest.raises(ValueError, match="keyword_backend"):
        make_teacher(CorpusConfig(keyword_backend="nope"))  # type: ignore[arg-type]


def test_make_teacher_hf_uses_the_configured_model(tiny_model_dir):
    t = make_teacher(CorpusConfig(keyword_backend="hf", teacher_model=str(tiny_model_dir)))
    assert isinstance(t, HFBackend) and t.device == "cpu"
    assert teacher_device(CorpusConfig()) == "cpu"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_backend_without_vllm_says_how_to_get_it():
    with pytest.raises(ImportError, match=r"raygen\[vllm\]"):
        VLLMBackend("smollm2")
    with pytest.raises(ImportError, match="keyword_backend='hf' or 'fallback'"):
        make_teacher(CorpusConfig(keyword_backend="vllm"))


def test_scripted_teacher_yields_parsed_keywords_through_the_hf_backend(scripted_teacher_dir, scripted_reply):
    """A real model on the real path: chat template, batched left-padded greedy generate, decode,
    parse and grounding; the answer's keywords are kept only for the item whose text holds them."""
    from raygen.corpus.keywords import extract_keywords

    backend = HFBackend(str(scripted_teacher_dir))
    convs = [[{"role": "user", "content": "Title: leather wallet"}], [{"role": "user", "content": "a longer "
                                                                         "prompt about cotton socks and more"}]]
    assert backend.generate(convs, max_new_tokens=16) == [scripted_reply, scripted_reply]
    rows = [{"title": "Leather wallet with a steel knife", "description": "", "categories": []},
            {"title": "Cotton socks", "description": "", "categories": []}]
    results = extract_keywords(backend, rows, 3, max_new_tokens=16, max_chars=256, min_keywords=2, grounded=True,
                               use_teacher=[True, True])
    assert [src for _, src in results] == ["teacher", "fallback"]
    assert results[0][0] == ["leather wallet", "steel knife"]
