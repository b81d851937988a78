"""`raygen recommend` on a tiny finished run (the ``tiny_run`` fixture of conftest.py)."""
from __future__ import annotations

import json
import math
import shutil

import pytest

from raygen.cli import main
from raygen.config import load_config
from raygen.io import read_json, write_parquet
from raygen.pipeline import CONFIG_FILE, STAGES, run_pipeline, save_config
from raygen.recommend import RecommendError, Recommender, recommend


def test_top_k_distinct_catalog_items_sorted_with_titles(tiny_run, tiny_catalog):
    items = tiny_catalog["items"].to_pylist()
    titles = {r["item_id"]: r["title"] for r in items}
    codes = {r["item_id"]: r["codes"] for r in tiny_catalog["codes"].to_pylist()}
    recs = recommend(tiny_run, [100, 101, 102], k=5)
    assert len(recs) == 5 and len({r["item_id"] for r in recs}) == 5
    scores = [r["score"] for r in recs]
    assert scores == sorted(scores, reverse=True) and all(s < 0 for s in scores)  # SID log-probabilities
    for r in recs:
        assert r["title"] == titles[r["item_id"]]
        assert r["sid"] == "".join(f"<{'abc'[lv]}_{c}>" for lv, c in enumerate(codes[r["item_id"]]))


def test_scores_are_the_model_log_probabilities_and_k_is_capped(tiny_run, tiny_catalog):
    import torch

    rec = Recommender(tiny_run)
    everything = rec.top_k([105, 106], k=50)  # exhaustive: the catalog has 12 items
    assert sorted(r["item_id"] for r in everything) == sorted(tiny_catalog["codes"].column("item_id").to_pylist())
    # the top item's score is the teacher-forced log-probability of its SID after the prompt
    top = everything[0]
    prompt = rec.prompt_ids([105, 106])
    sid_ids = rec.tokenizer.convert_tokens_to_ids(rec.tokenizer.tokenize(top["sid"]))
    assert len(sid_ids) == 3
    with torch.no_grad():  # eval.sid_only_head (default): log-softmax over the SID tokens + EOS
        raw = rec.model(torch.tensor([prompt + sid_ids])).logits[0]
    allowed = torch.unique(torch.cat([rec.catalog.sid_matrix.flatten(), torch.tensor([rec.tokenizer.eos_token_id])]))
    logits = torch.full_like(raw, float("-inf"))
    logits[:, allowed] = raw[:, allowed].log_softmax(-1)
    expected = sum(float(logits[len(prompt) - 1 + j, t]) for j, t in enumerate(sid_ids))
    assert top["score"] == pytest.approx(expected, abs=1e-4)
    # the prompt is the run's training format: the saved tasks config (sequence prefix) is used
    assert "You recommend products." in rec.tokenizer.decode(prompt)
    # excluding the history removes exactly those items and keeps the order of the rest
    rest = rec.top_k([105, 106], k=50, exclude_history=True)
    assert [r["item_id"] for r in rest] == [r["item_id"] for r in everything if r["item_id"] not in (105, 106)]


def test_search_query_mode_scores_the_search_prompt(tiny_run, tiny_catalog, capsys):
    """``raygen recommend --query``: items for a free-text query, scored after the search prompt (the first
    query2sid template, as in evaluation), not after a history prompt."""
    import torch

    from raygen.tasks.builders import search_prompt
    from raygen.tasks.encode import encode_prompt

    rec = Recommender(tiny_run)
    recs = rec.search("steel bolt", k=50)
    assert sorted(r["item_id"] for r in recs) == sorted(tiny_catalog["codes"].column("item_id").to_pylist())
    prompt = encode_prompt(rec.tokenizer, search_prompt("steel bolt", rec.cfg.tasks))
    assert "steel bolt" in rec.tokenizer.decode(prompt)
    sid_ids = rec.tokenizer.convert_tokens_to_ids(rec.tokenizer.tokenize(recs[0]["sid"]))
    with torch.no_grad():
        raw = rec.model(torch.tensor([prompt + sid_ids])).logits[0]
    allowed = torch.unique(torch.cat([rec.catalog.sid_matrix.flatten(), torch.tensor([rec.tokenizer.eos_token_id])]))
    logp = raw[:, allowed].log_softmax(-1)
    col = {int(t): i for i, t in enumerate(allowed)}
    expected = sum(float(logp[len(prompt) - 1 + j, col[t]]) for j, t in enumerate(sid_ids))
    assert recs[0]["score"] == pytest.approx(expected, abs=1e-4)
    assert [r["item_id"] for r in recommend(tiny_run, query="steel bolt", k=3)] == [
        r["item_id"] for r in rec.search("steel bolt", k=3)]  # same beam width, same answer
    with pytest.raises(RecommendError, match="query is empty"):
        rec.search("  ", k=3)
    with pytest.raises(RecommendError, match="either a history or a query"):
        recommend(tiny_run, [100], query="bolt")
    assert main(["recommend", "--run", str(tiny_run), "--query", "steel bolt", "-k", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["recommend", "--run", str(tiny_run)]) == 2
    assert "give one of --history, --query or --histories" in capsys.readouterr().err


def test_unknown_items_and_bad_queries_are_clear_errors(tiny_run):
    with pytest.raises(RecommendError, match=r"unknown item id\(s\) \[999, 1234\]"):
        recommend(tiny_run, [100, 999, 1234, 999], k=3)
    with pytest.raises(RecommendError, match="history is empty"):
        recommend(tiny_run, [], k=3)
    with pytest.raises(RecommendError, match="k must be >= 1"):
        recommend(tiny_run, [100], k=0)


def test_run_without_finished_model_or_config(tiny_run, tmp_path):
    broken = tmp_path / "run"
    shutil.copytree(tiny_run, broken)
    (broken / "rl" / "_SUCCESS").unlink()
    with pytest.raises(RecommendError, match="has no finished model: stage 'rl' has not finished"):
        recommend(broken, [100], k=3)
    (broken / CONFIG_FILE).unlink()
    with pytest.raises(RecommendError, match="config.yaml not found"):
        recommend(broken, [100], k=3)
    with pytest.raises(RecommendError, match="does not exist"):
        recommend(tmp_path / "nowhere", [100], k=3)


def test_config_of_another_run_is_rejected(tiny_run, tmp_path):
    other = tmp_path / "run"
    shutil.copytree(tiny_run, other)
    cfg = load_config(other / CONFIG_FILE, ["tasks.max_history=3"])  # the prompt would differ from SFT's
    save_config(cfg, other)
    with pytest.raises(RecommendError, match="is not the config that produced the model"):
        recommend(other, [100], k=3)


def test_cli_json_table_and_errors(tiny_run, capsys):
    assert main(["recommend", "--run", str(tiny_run), "--history", "100,101", "-k", "4", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert [r["item_id"] for r in recs] == [r["item_id"] for r in recommend(tiny_run, [100, 101], k=4)]
    assert main(["recommend", "--run", str(tiny_run), "--history", "100,101", "-k", "4"]) == 0  # same beam width
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and lines[0].split()[:4] == ["rank", "score", "item_id", "sid"]
    assert recs[0]["title"] in lines[1]
    assert main(["recommend", "--run", str(tiny_run), "--history", "100,4242"]) == 2
    assert "unknown item id(s) [4242]" in capsys.readouterr().err


def test_run_pipeline_saves_a_config_that_reloads_to_the_same_keys(tmp_path, monkeypatch):
    import raygen.ray_utils

    monkeypatch.setattr(raygen.ray_utils, "init_ray", lambda cfg=None: None)  # the data stage needs no Ray
    cfg = load_config("configs/default.yaml", [f"run_dir={tmp_path}", "data.synthetic.n_items=20",
                                               "data.synthetic.n_users=10", "sft.lr=0.0003"])
    summary = run_pipeline(cfg, only=["data"])
    assert summary["data"]["status"] == "ran"
    saved = load_config(tmp_path / CONFIG_FILE)
    assert saved == cfg and saved.sft.lr == 0.0003
    assert read_json(tmp_path / "data" / "_SUCCESS")["key"] == summary["data"]["key"]
    assert run_pipeline(saved, only=["data"])["data"]["status"] == "skipped"  # same keys from the saved copy


# --- issue 13: a damaged run folder is a RecommendError (exit 2), never a traceback -----------


def _damaged(tiny_run, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    damage(run)
    return run


def _missing_sft(run):
    (run / "rl" / "model_ref.json").write_text(json.dumps({"model_dir": "sft/model", "reason": "keep_best"}))
    shutil.rmtree(run / "sft")


def _truncated_safetensors(run):
    from raygen.modelref import model_dir

    f = model_dir(run / "rl") / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


@pytest.mark.parametrize("damage,needle", [
    (_missing_sft, r"sft/model.* not a saved model"),
    (_truncated_safetensors, r"cannot load the model in .*lm/model"),
    (lambda run: (run / "rl" / "_SUCCESS").write_text("[1, 2]"), r"rl/_SUCCESS is not a valid raygen marker"),
    (lambda run: (run / "rl" / "_SUCCESS").write_text("{not json"), r"rl/_SUCCESS is not a valid raygen marker"),
    (lambda run: (run / CONFIG_FILE).write_text("sids:\n  levels: [3\n"), r"config\.yaml.*invalid YAML"),
    (lambda run: (run / CONFIG_FILE).write_text("sids:\n  levels: three\n"), r"config\.yaml.*sids\.levels"),
    (lambda run: (run / "rl" / "model_ref.json").write_text("[]"), r"model_ref\.json"),
    (lambda run: (run / "data" / "items.parquet").write_bytes(b"PAR1 truncated"), r"items\.parquet"),
])
def test_damaged_run_is_a_clear_error(tiny_run, tmp_path, capsys, damage, needle):
    run = _damaged(tiny_run, tmp_path, damage)
    with pytest.raises(RecommendError, match=needle) as e:
        recommend(run, [100], k=3)
    assert "\n" not in str(e.value)
    assert main(["recommend", "--run", str(run), "--history", "100"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raygen: error: ") and "Traceback" not in err


def test_hybrid_fuses_the_model_list_with_the_content_neighbours(tiny_run, tiny_catalog, tmp_path, capsys):
    import numpy as np
    import pyarrow as pa

    from raygen.eval.fusion import rrf_scores

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with pytest.raises(RecommendError, match=r"corpus/embeddings.parquet not found .*hybrid ranking needs it"):
        recommend(run, [100, 101], k=4, hybrid=True)
    with pytest.raises(RecommendError, match="hybrid ranking is for histories"):
        recommend(run, query="red shoes", hybrid=True)
    ids = tiny_catalog["items"].column("item_id").to_numpy()
    vecs = np.random.default_rng(1).normal(size=(len(ids), 8)).astype(np.float32)
    vecs[list(ids).index(107)] = vecs[list(ids).index(101)] * 3  # 107: the last item's nearest neighbour
    write_parquet(run / "corpus/embeddings.parquet", pa.table(
        {"item_id": pa.array(ids, pa.int64()), "embedding": pa.array(list(vecs), pa.list_(pa.float32(), 8))}))
    n = len(ids) - 2  # every catalog item but the history: each is in both lists (the content list holds all)
    model = [r["item_id"] for r in recommend(run, [100, 101], k=n, exclude_history=True)]
    recs = recommend(run, [100, 101], k=n, hybrid=True, exclude_history=True)
    assert sorted(r["item_id"] for r in recs) == sorted(model) and not {100, 101} & set(model)
    by_item = {r["item_id"]: r for r in recs}
    assert by_item[107]["content_rank"] == 1  # 101 itself is excluded, so its twin 107 leads the content list
    for r in recs:
        assert model[r["model_rank"] - 1] == r["item_id"]
        assert r["score"] == pytest.approx(1 / (59 + r["model_rank"]) + 1 / (59 + r["content_rank"]))
    assert [r["item_id"] for r in recs] != model  # the content ranking moved items
    assert [r["score"] for r in recs] == sorted((r["score"] for r in recs), reverse=True)
    assert rrf_scores([[1, 2], [2, 3]], [1.0, 1.0]) == pytest.approx({2: 1 / 61 + 1 / 60, 1: 1 / 60, 3: 1 / 61})
    assert main(["recommend", "--run", str(run), "--history", "100,101", "-k", "4", "--hybrid", "--json"]) == 0
    assert [r["item_id"] for r in json.loads(capsys.readouterr().out)] == [
        r["item_id"] for r in recommend(run, [100, 101], k=4, hybrid=True)]


def _copy_with_embeddings(tiny_run, tiny_catalog, tmp_path, seed: int):
    """A copy of tiny_run with seeded random 8-d corpus embeddings of its catalog."""
    import numpy as np
    import pyarrow as pa

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    ids = tiny_catalog["items"].column("item_id").to_numpy()
    vecs = np.random.default_rng(seed).normal(size=(len(ids), 8)).astype(np.float32)
    write_parquet(run / "corpus/embeddings.parquet", pa.table(
        {"item_id": pa.array(ids, pa.int64()), "embedding": pa.array(list(vecs), pa.list_(pa.float32(), 8))}))
    return run


def test_default_ranking_is_the_one_the_eval_stage_chose_on_valid(tiny_run, tiny_catalog, tmp_path, capsys):
    from raygen.eval.fusion import HYBRID
    from raygen.io import write_json
    from raygen.runner import SUCCESS, stage_keys

    run = _copy_with_embeddings(tiny_run, tiny_catalog, tmp_path, seed=2)
    model = [r["item_id"] for r in recommend(run, [100, 101], k=6, hybrid=False)]
    fused = [r["item_id"] for r in recommend(run, [100, 101], k=6, hybrid=True)]
    assert model != fused
    rec = Recommender(run)
    assert rec.serving()["ranking"] == "raygen" and "no finished eval stage" in rec.serving()["why"]
    assert [r["item_id"] for r in rec.top_k([100, 101], k=6)] == model  # no eval: the model alone
    # a finished eval stage of this config that chose the hybrid on the valid split
    cfg = load_config(run / CONFIG_FILE)
    (run / "eval").mkdir()
    write_json(run / "eval" / "metrics.json", {"serving": {"ranking": HYBRID, "chosen_on": "valid", "why": "test"}})
    write_json(run / "eval" / SUCCESS, {"key": stage_keys(cfg, STAGES)["eval"]})
    assert Recommender(run).serving()["ranking"] == HYBRID
    assert [r["item_id"] for r in recommend(run, [100, 101], k=6)] == fused
    assert [r["item_id"] for r in recommend(run, [100, 101], k=6, hybrid=False)] == model  # forced off
    assert main(["recommend", "--run", str(run), "--history", "100,101", "-k", "6", "--json"]) == 0
    assert [r["item_id"] for r in json.loads(capsys.readouterr().out)] == fused
    assert main(["recommend", "--run", str(run), "--history", "100,101", "-k", "6", "--no-hybrid", "--json"]) == 0
    assert [r["item_id"] for r in json.loads(capsys.readouterr().out)] == model
    assert [r["item_id"] for r in recommend(run, query="red shoes", k=3)]  # queries: the model (no hybrid)
    # an eval stage of another config is not trusted; an eval written before the choice neither
    write_json(run / "eval" / SUCCESS, {"key": "0" * 16})
    assert "another config" in Recommender(run).serving()["why"]
    assert [r["item_id"] for r in recommend(run, [100, 101], k=6)] == model
    write_json(run / "eval" / SUCCESS, {"key": stage_keys(cfg, STAGES)["eval"]})
    write_json(run / "eval" / "metrics.json", {"table": {}})
    assert "no serving choice" in Recommender(run).serving()["why"]
    (run / "eval" / "metrics.json").write_text("{broken")
    with pytest.raises(RecommendError, match=r"eval/metrics.json is unreadable"):
        Recommender(run).serving()


class _HashEmbedder:
    """A stand-in for the sentence embedder: a seeded 8-d vector per text (same text, same vector)."""

    def encode(self, texts, batch_size, normalize_embeddings, convert_to_numpy, show_progress_bar):
        import hashlib

        import numpy as np

        out = np.stack([np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(size=8)
                        for t in texts]).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True) if normalize_embeddings else out


def _run_with_quantizer(tiny_run, tiny_catalog, tmp_path):
    """tiny_run plus 8-d corpus embeddings and an RQ-KMeans quantizer (3 levels x 5 codes: code 4 has no
    SID token in the tiny vocabulary, which has codes 0-3 at every level)."""
    import numpy as np

    from raygen.sid.quantizer import save_quantizer
    from raygen.sid.rqkmeans import RQKMeans

    run = _copy_with_embeddings(tiny_run, tiny_catalog, tmp_path, seed=3)
    save_quantizer(RQKMeans(3, 5, iters=10).fit(np.random.default_rng(4).normal(size=(80, 8)).astype(np.float32)),
                   run / "sids")
    return run


def _write_items(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_added_items_get_sids_and_are_recommended_without_retraining(tiny_run, tiny_catalog, tmp_path):
    import numpy as np

    from raygen.additions import read_additions
    from raygen.corpus.embed import table_texts
    from raygen.data.schema import DataError
    from raygen.recommend import Recommender
    from raygen.additions import add_items

    run = _run_with_quantizer(tiny_run, tiny_catalog, tmp_path)
    new = [{"item_id": 500 + i, "title": f"new gadget {i}", "brand": "zeta", "categories": ["tools"],
            "description": f"gadget number {i}"} for i in range(8)]
    items = _write_items(tmp_path / "new.jsonl", [*new[:4], "", *new[4:]])  # a blank line is fine
    report = add_items(run, items, embedder=_HashEmbedder())
    assert report["n_added"] == report["n_additions_total"] == 8
    added, batches = read_additions(run)
    assert added.column("item_id").to_pylist() == list(range(500, 508)) and len(batches) == 1
    # the vectors are the embedder's, of the corpus stage's text; the SIDs are unique across old and new items
    expected = _HashEmbedder().encode(table_texts(added), 64, True, True, False)
    np.testing.assert_allclose(np.array(added.column("embedding").to_pylist()), expected, rtol=1e-6)
    codes = added.column("codes").to_pylist()
    old = tiny_catalog["codes"].column("codes").to_pylist()
    assert len({tuple(c) for c in codes + old}) == len(codes) + len(old)
    content_only = {i for i, c in zip(range(500, 508), codes) if 4 in c}  # a code without a SID token
    assert set(report["content_only_ids"]) == content_only and 0 < len(content_only) < 8
    assert report["n_in_model_vocabulary"] == 8 - len(content_only)
    rec = Recommender(run)
    assert rec.content_only == content_only and rec.titles[503] == "new gadget 3"
    reachable = set(range(500, 508)) - content_only
    catalog = set(tiny_catalog["codes"].column("item_id").to_pylist())
    assert set(rec.catalog.item_ids.tolist()) == catalog | reachable  # the beam search's trie
    everything = {r["item_id"] for r in rec.top_k([100, 101], k=100, hybrid=False)}
    assert everything == catalog | reachable
    fused = {r["item_id"] for r in rec.top_k([100, 101], k=100, hybrid=True)}
    assert fused == catalog | reachable | content_only  # the content ranking reaches every added item
    some = sorted(reachable)[0]
    assert len(rec.top_k([100, some], k=3, hybrid=False)) == 3  # a reachable new item may be in a history
    with pytest.raises(RecommendError, match=rf"\[{sorted(content_only)[0]}\] were added after training"):
        rec.top_k([100, sorted(content_only)[0]], k=3)
    # a second batch appends; an item already known is an error naming its line, nothing is written
    clash = _write_items(tmp_path / "clash.jsonl", [{"item_id": 600, "title": "x"}, {"item_id": 503, "title": "y"}])
    with pytest.raises(DataError, match=r"clash.jsonl:2 field 'item_id': item 503 is already in the run's catalog"):
        add_items(run, clash, embedder=_HashEmbedder())
    assert read_additions(run)[0].num_rows == 8
    more = add_items(run, _write_items(tmp_path / "more.jsonl", [{"item_id": 600, "title": "late"}]),
                     embedder=_HashEmbedder())
    added, batches = read_additions(run)
    assert more["n_additions_total"] == added.num_rows == 9 and [b["n_added"] for b in batches] == [8, 1]


@pytest.mark.parametrize("line, needle", [
    ("{not json", r"bad.jsonl:2: not a JSON object"),
    ("[1, 2]", r"bad.jsonl:2: expected a JSON object, got list"),
    ('{"item_id": "7", "title": "t"}', r"bad.jsonl:2 field 'item_id': an integer is required"),
    ('{"item_id": 7}', r"bad.jsonl:2 field 'title': a non-empty string is required"),
    ('{"item_id": 7, "title": "t", "brand": 3}', r"bad.jsonl:2 field 'brand': a string is required"),
    ('{"item_id": 7, "title": "t", "categories": "tools"}', r"bad.jsonl:2 field 'categories': a list of strings"),
    ('{"item_id": 1, "title": "again"}', r"bad.jsonl:2 field 'item_id': item 1 is also on line 1"),
])
def test_bad_items_file_names_file_line_and_field(tmp_path, line, needle):
    from raygen.additions import read_items_file
    from raygen.data.schema import DataError

    path = _write_items(tmp_path / "bad.jsonl", ['{"item_id": 1, "title": "ok"}', line])
    with pytest.raises(DataError, match=needle):
        read_items_file(path)


def test_add_items_cli_checks_the_embedder_against_the_run(tiny_run, tiny_catalog, tmp_path, capsys):
    """The CLI loads the run's corpus.embed_model (MiniLM, 384-d, offline); this run's corpus vectors are 8-d."""
    run = _run_with_quantizer(tiny_run, tiny_catalog, tmp_path)
    items = _write_items(tmp_path / "new.jsonl", [{"item_id": 500, "title": "new gadget"}])
    assert main(["add-items", "--run", str(run), "--items", str(items)]) == 2
    err = capsys.readouterr().err
    assert "gives 384-d vectors, the run's corpus embeddings are 8-d" in err and "Traceback" not in err
    assert not (run / "additions").exists()
    assert main(["add-items", "--run", str(run), "--items", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err


def _write_histories(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_batch_file_matches_one_by_one_and_reports_skips(tiny_run, tmp_path, suffix):
    from raygen.recommend_batch import read_summary, recommend_file

    rec = Recommender(tiny_run)
    histories = [[100, 101], [105, 106, 107], [103], [101, 100, 110]]
    hit = rec.top_k(histories[0], k=4, exclude_history=True, hybrid=False)[1]["item_id"]  # u0's target: rank 2
    src = _write_histories(tmp_path / "users.jsonl", [
        {"user_id": "u0", "history": histories[0], "target": hit},
        {"user_id": 7, "history": [100, 4242], "country": "ignored"},  # unknown item: a counted skip
        "",  # blank lines are allowed
        {"user_id": "u2", "history": histories[1]},
        {"user_id": "u3", "history": []},  # empty: a counted skip
        {"user_id": "u4", "history": histories[2]},
        {"user_id": "u5", "history": histories[3], "target": 109},
    ])
    out = tmp_path / f"recs{suffix}"
    summary = recommend_file(rec, src, out, k=4, exclude_history=True, hybrid=False, chunk_rows=3, progress=False)
    if suffix == ".parquet":
        from raygen.io import read_parquet

        rows = read_parquet(out).to_pylist()
        assert read_summary(out) == summary
    else:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 4, 5, 6, 7]  # every non-blank line, in input order
    assert [r["user_id"] for r in rows] == ["u0", "7", "u2", "u3", "u4", "u5"]
    ranked = [r for r in rows if r["skipped"] is None]
    assert len(ranked) == 4
    for r, h in zip(ranked, histories):  # batched (chunks of 3, padded) == one history at a time
        one = rec.top_k(h, k=4, exclude_history=True, hybrid=False)
        assert r["item_ids"] == [x["item_id"] for x in one] and not set(h) & set(r["item_ids"])
        assert r["scores"] == pytest.approx([x["score"] for x in one], abs=1e-4)
    assert "unknown item id(s) [4242]" in rows[1]["skipped"] and rows[1]["item_ids"] == []
    assert "history is empty" in rows[3]["skipped"]
    assert summary["users"] == 6 and summary["ranked"] == 4 and summary["ranking"] == "raygen"
    assert summary["skipped"]["counts"] == {"unknown_items": 1, "empty_history": 1}
    assert summary["skipped"]["examples"]["unknown_items"] == ["users.jsonl:2"]
    assert summary["precision"]["bf16"] is False and summary["users_per_s"] > 0
    # rows with a target are scored: HR/NDCG over those two rows, as the eval's metrics would give
    assert [r["target"] for r in rows] == [hit, None, None, None, None, 109]
    hits = [r["item_ids"].index(r["target"]) if r["target"] in r["item_ids"] else None for r in (rows[0], rows[5])]
    assert hits[0] == 1
    ndcg = sum(0 if h is None else 1 / math.log2(h + 2) for h in hits) / 2
    metrics = summary["metrics"]
    assert metrics["n"] == 2 and metrics["ndcg@4"] == pytest.approx(ndcg) and set(metrics) >= {"hr@1", "ndcg@4 ci95"}
    assert metrics["ndcg@4 ci95"][0] <= ndcg <= metrics["ndcg@4 ci95"][1]


@pytest.mark.parametrize("line, needle", [
    ('{"user_id": "a", "history": [1, 2', "users.jsonl:2: malformed JSON"),
    ('[1, 2]', "users.jsonl:2: expected a JSON object"),
    ('{"history": [100]}', "users.jsonl:2 field 'user_id'"),
    ('{"user_id": "a", "history": "100,101"}', "users.jsonl:2 field 'history'"),
    ('{"user_id": "a", "history": [100, true]}', "users.jsonl:2 field 'history'"),
    ('{"user_id": "a", "history": [100], "target": "101"}', "users.jsonl:2 field 'target'"),
])
def test_batch_file_bad_lines_name_file_line_and_field(tiny_run, tmp_path, line, needle):
    from raygen.data.schema import DataError
    from raygen.recommend_batch import recommend_file

    src = _write_histories(tmp_path / "users.jsonl", ['{"user_id": "ok", "history": [100]}', line])
    out = tmp_path / "recs.parquet"
    with pytest.raises(DataError) as e:
        recommend_file(Recommender(tiny_run), src, out, chunk_rows=1, progress=False)
    assert needle in str(e.value)
    assert list(tmp_path.iterdir()) == [src]  # nothing written, no temporary left behind


def test_batch_cli_hybrid_and_argument_errors(tiny_run, tiny_catalog, tmp_path, capsys):
    run = _copy_with_embeddings(tiny_run, tiny_catalog, tmp_path, seed=3)
    src = _write_histories(tmp_path / "users.jsonl", [{"user_id": "a", "history": [100, 101]},
                                                      {"user_id": "b", "history": [104]}])
    out = tmp_path / "recs.jsonl"
    assert main(["recommend", "--run", str(run), "--histories", str(src), "--out", str(out), "-k", "5",
                 "--hybrid"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ranking"] == "raygen+content" and summary["ranked"] == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for row, h in zip(rows, ([100, 101], [104])):
        assert row["item_ids"] == [r["item_id"] for r in recommend(run, h, k=5, hybrid=True)]
    assert main(["recommend", "--run", str(run), "--histories", str(src), "--out", str(out)]) == 2  # exists
    assert "recs.jsonl exists: choose another name, or pass --overwrite" in capsys.readouterr().err
    assert out.read_text().count("\n") == 2  # untouched
    assert main(["recommend", "--run", str(run), "--histories", str(src), "--out", str(out), "-k", "2",
                 "--overwrite", "--json"]) == 0
    assert len(json.loads(out.read_text().splitlines()[0])["item_ids"]) == 2
    capsys.readouterr()
    assert main(["recommend", "--run", str(run), "--histories", str(src)]) == 2
    assert "--histories and --out go together" in capsys.readouterr().err
    assert main(["recommend", "--run", str(run), "--histories", str(src), "--history", "100", "--out", "x.jsonl"]) == 2
    assert main(["recommend", "--run", str(run), "--histories", str(src), "--out", str(tmp_path / "r.csv")]) == 2
    assert "must end in .parquet or .jsonl" in capsys.readouterr().err
    assert main(["recommend", "--run", str(run), "--histories", str(tmp_path / "none.jsonl"),
                 "--out", str(out)]) == 2
    assert "none.jsonl: no such file" in capsys.readouterr().err


def test_batch_job_script_runs_the_cli(tiny_run, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    src = _write_histories(tmp_path / "users.jsonl", [{"user_id": "a", "history": [100, 101], "target": 102}])
    out = tmp_path / "recs.jsonl"
    proc = subprocess.run([sys.executable, str(root / "jobs" / "batch_recommend.py"), "--run", str(tiny_run),
                           "--histories", str(src), "--out", str(out), "-k", "3", "--no-hybrid"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["metrics"]["n"] == 1
    row = json.loads(out.read_text())
    assert row["item_ids"] == [r["item_id"] for r in recommend(tiny_run, [100, 101], k=3, hybrid=False)]


def test_batch_file_long_run_of_skipped_lines_keeps_order(tiny_run, tmp_path):
    from raygen.recommend_batch import recommend_file

    lines = [{"user_id": f"s{i}", "history": [9000 + i]} for i in range(9)] + [{"user_id": "ok", "history": [100]}]
    src = _write_histories(tmp_path / "users.jsonl", lines)
    out = tmp_path / "recs.jsonl"
    summary = recommend_file(Recommender(tiny_run), src, out, k=2, hybrid=False, chunk_rows=1, progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, 11))  # written in two flushes (8 skipped, then the rest)
    assert [r["skipped"] is None for r in rows] == [False] * 9 + [True] and len(rows[-1]["item_ids"]) == 2
    assert summary["skipped"]["counts"] == {"unknown_items": 9} and summary["ranked"] == 1
