"""Fault tolerance, end to end on a local Ray.

(a) A Ray Train worker dies in the middle of SFT (``RAYGEN_FAULT_AT_STEP``: rank 0 calls ``os._exit``
    once); Ray Train restarts the worker group from the last checkpoint and the run finishes.
(b) The driver of ``python -m raygen run`` is SIGKILLed while a stage runs; the rerun, started while the
    killed run's local Ray processes still live, skips the finished stages, reruns the interrupted one
    and finishes; no half-written stage folder is left;
    the resumed SFT model is bit-identical to an uninterrupted run's, and so are the eval metrics.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from raygen.configbase import Resources

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _tiny_base(tmp_path: Path, tok) -> tuple[Path, list[int], list[dict]]:
    """A tiny Llama with SID tokens, saved with its tokenizer, and next-SID examples."""
    from transformers import LlamaConfig, LlamaForCausalLM

    sid_tokens = [f"<{level}_{c}>" for level in "abc" for c in range(4)]
    tok.add_tokens(sid_tokens)
    sid_ids = tok.convert_tokens_to_ids(sid_tokens)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         tie_word_embeddings=True))
    base = tmp_path / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    g = torch.Generator().manual_seed(0)
    examples = []
    for _ in range(32):
        hist = "".join(sid_tokens[int(i)] for i in torch.randint(0, 12, (3,), generator=g))
        prompt = tok(f"history {hist} next", add_special_tokens=False)["input_ids"]
        answer = sid_ids[int(torch.randint(0, 4, (1,), generator=g))::4][:3]
        examples.append({"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer})
    return base, sid_ids, examples


def test_worker_killed_mid_sft_resumes_from_last_checkpoint(ray_local, tmp_path, tiny_tokenizer, monkeypatch):
    from safetensors.torch import load_file

    from raygen.train import TrainConfig, train
    from raygen.faults import MARKER as FAULT_MARKER, site_var

    FAULT_AT_STEP = site_var("AT_STEP")

    base, sid_ids, examples = _tiny_base(tmp_path, tiny_tokenizer)
    # log_every=1: a worker's report of step N is queued only after the controller took its report
    # of step N-1, so once both ranks passed step 5's report the step-3 checkpoint is registered.
    cfg = TrainConfig(mode="full", resources=Resources(count=2), deepspeed=False, batch_size=2, max_steps=8,
                      lr=1e-3, checkpoint_every=3, keep_checkpoints=5, log_every=1, max_failures=1, max_len=64)

    monkeypatch.setenv(FAULT_AT_STEP, "5")
    monkeypatch.setenv(FAULT_MARKER, str(tmp_path / "fault.marker"))
    faulty = train(base, examples, sid_ids, cfg, tmp_path / "out_fault", tmp_path / "ray", resume=False,
                   name="faulty")
    assert (tmp_path / "fault.marker").exists()  # rank 0 did die after step 5
    # the last attempt started from the step-3 checkpoint, not from 0, and ran to the end
    assert (faulty["start_step"], faulty["final_step"], faulty["metrics"]["step"]) == (3, 8, 8)
    ckpts = sorted(p.name for p in (tmp_path / "ray" / "faulty").glob("step_*"))
    assert ckpts == ["step_0000003", "step_0000006", "step_0000008"]

    # exact resume: the same run without the fault ends with bit-identical weights (a restore that
    # loaded nothing, or lost the optimizer state, the schedule or the data position, would not)
    monkeypatch.delenv(FAULT_AT_STEP)
    clean = train(base, examples, sid_ids, cfg, tmp_path / "out_clean", tmp_path / "ray", resume=False, name="clean")
    assert (clean["start_step"], clean["final_step"]) == (0, 8)
    final = load_file(tmp_path / "out_fault" / "model" / "model.safetensors")
    reference = load_file(tmp_path / "out_clean" / "model" / "model.safetensors")
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[k], reference[k]) for k in final)
    assert faulty["loss"] == clean["loss"] and faulty["loss"] > 0  # finite, not NaN


def test_fault_injection_needs_a_marker(monkeypatch):
    from raygen.faults import MARKER as FAULT_MARKER, fault_env, site_var

    FAULT_AT_STEP = site_var("AT_STEP")

    monkeypatch.delenv(FAULT_MARKER, raising=False)
    monkeypatch.setenv(FAULT_AT_STEP, "3")
    with pytest.raises(ValueError, match=FAULT_MARKER):
        fault_env()


def _tiny_pipeline_config(run_dir: Path, model_dir: Path, ray_address: str = "") -> dict:
    """The whole pipeline on a 40-item synthetic catalog, a tiny Llama and a 12-step SFT."""
    return {
        "run_dir": str(run_dir),
        "ray": {"address": ray_address} if ray_address else {"num_cpus": 2},  # no address: a local Ray of its own
        "data": {"source": "synthetic", "synthetic": {"n_items": 40, "n_users": 30, "n_categories": 4,
                                                      "n_tastes": 3, "min_seq_len": 4, "max_seq_len": 6}},
        "corpus": {"keyword_backend": "fallback"},
        "sids": {"method": "rqkmeans", "levels": 2, "codebook_size": 8, "kmeans_iters": 10},
        "lm": {"model": str(model_dir), "init": "random"},
        "align": {"enabled": False},
        # log_every=1: once the step-4 checkpoint is being written, the step-2 one is registered
        "sft": {"mode": "full", "resources": {"count": 1}, "deepspeed": False, "batch_size": 4, "max_steps": 12,
                "checkpoint_every": 2, "log_every": 1, "max_len": 128},
        "rl": {"enabled": False},
        "eval": {"splits": ["test"], "resources": {"count": 0}, "baselines": ["popularity"], "beam_width": 5,
                 "ks": [1, 5]},
    }


def _start(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "raygen", "run", "--config", str(config)], cwd=REPO,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(proc: subprocess.Popen, log: Path, ready, timeout: float) -> None:
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"pipeline exited ({proc.returncode}) before the kill point:\n{log.read_text()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"kill point not reached in {timeout}s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def test_driver_killed_mid_pipeline_rerun_skips_finished_stages(ray_local, tmp_path, tiny_model_dir):
    import yaml

    from raygen.recommend import recommend

    run_dir = tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    # runs 1 and 2 start a local Ray of their own (as `python jobs/full_pipeline.py` on a workstation)
    config.write_text(yaml.safe_dump(_tiny_pipeline_config(run_dir, tiny_model_dir)))

    # run 1: SIGKILL the driver while sft trains (lm finished, sft's step-4 checkpoint on its way)
    proc = _start(config, tmp_path / "run1.log")
    try:
        _wait_for(proc, tmp_path / "run1.log",
                  lambda: any((run_dir / "ray_train").glob("sft-*/step_0000004")), timeout=900)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: its local Ray is left to notice on its own
        proc.wait()
    leftover = proc.pid  # the killed driver's session: its local Ray's processes
    try:
        finished = {p.parent.name for p in run_dir.glob("*/_SUCCESS")}
        assert finished == {"data", "corpus", "sids", "lm", "align"}
        assert not (run_dir / "sft").exists() and (run_dir / ".sft.tmp").exists()  # only the hidden work folder
        os.killpg(leftover, 0)  # raises if nothing of the killed run's Ray is left: then this tests nothing

        # run 2: the same command, at once, while the killed run's Ray processes still live, finishes the run
        proc = _start(config, tmp_path / "run2.log")
        assert proc.wait(timeout=900) == 0, (tmp_path / "run2.log").read_text()[-3000:]
    finally:
        try:
            os.killpg(leftover, signal.SIGKILL)  # what a node's clean-up would do
        except ProcessLookupError:
            pass
    out = (tmp_path / "run2.log").read_text()
    status = json.loads(out[out.rindex("{\n"):])
    assert status == {**{s: "skipped" for s in ("data", "corpus", "sids", "lm", "align")},
                      **{s: "ran" for s in ("sft", "rl", "eval", "report")}}
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []  # no .tmp/.old left
    sft = json.loads((run_dir / "sft" / "metrics.json").read_text())
    assert sft["final_step"] == 12 and sft["start_step"] in (2, 4)  # Ray Train resumed the killed run's SFT
    assert (run_dir / sft["model_dir"] / "config.json").exists()  # recorded relative to the run, not the tmp folder
    assert json.loads((run_dir / "eval" / "metrics.json").read_text())["n_rows"] > 0

    # the finished run serves recommendations from its saved config and final model
    recs = recommend(run_dir, [1, 2, 3], k=5)
    assert len({r["item_id"] for r in recs}) == 5 and all(r["title"] for r in recs)

    # run 3: the same config never interrupted (upstream stages linked from run 1, SFT from step 0 in
    # its own folder), its driver joining the test's Ray as a job would: the resumed SFT is exact, so
    # weights and eval metrics are equal
    address = ray_local.get_runtime_context().gcs_address
    from safetensors.torch import load_file

    from raygen.config import load_config
    from raygen.pipeline import STAGES
    from raygen.runner import link_finished

    clean_dir, clean_cfg = tmp_path / "clean", tmp_path / "clean.yaml"
    clean_cfg.write_text(yaml.safe_dump(_tiny_pipeline_config(clean_dir, tiny_model_dir, address)))
    upstream = [st for st in STAGES if st.name in finished]
    assert sorted(link_finished(load_config(clean_cfg), upstream, clean_dir,
                                lambda name, key: run_dir / name)) == sorted(finished)
    proc = _start(clean_cfg, tmp_path / "run3.log")
    assert proc.wait(timeout=900) == 0, (tmp_path / "run3.log").read_text()[-3000:]
    clean = json.loads((clean_dir / "sft" / "metrics.json").read_text())
    assert (clean["start_step"], clean["final_step"]) == (0, 12)
    resumed_w = load_file(run_dir / sft["model_dir"] / "model.safetensors")
    clean_w = load_file(clean_dir / clean["model_dir"] / "model.safetensors")
    assert resumed_w.keys() == clean_w.keys()
    assert all(torch.equal(resumed_w[k], clean_w[k]) for k in clean_w)
    assert (json.loads((run_dir / "eval" / "metrics.json").read_text())["splits"]
            == json.loads((clean_dir / "eval" / "metrics.json").read_text())["splits"])
