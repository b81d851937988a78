"""The HF hub switch: offline by default everywhere; the user's HF_HUB_OFFLINE=0 reaches every Ray worker
and, with lm.allow_download, lets the lm stage fetch an HF id. No network: what is checked is the
environment the workers get, the error for an id that is not available offline, and what the loader is
asked to do."""
import os

import pytest

from raygen.configbase import ConfigError
from raygen.lm.backbone import load_backbone
from raygen.lm.config import LmConfig
from raygen.models import hub_downloads_allowed
from raygen.ray_utils import runtime_env, worker_env

HUB_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
MISSING_ID = "raygen-tests/no-such-model"


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))


def test_workers_are_offline_unless_the_user_says_otherwise(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert not hub_downloads_allowed()
    assert all(worker_env()[v] == "1" for v in HUB_VARS)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert all(runtime_env()["env_vars"][v] == "1" for v in HUB_VARS)


@pytest.mark.parametrize("value", ["0", "false", "OFF"])
def test_user_set_hf_hub_offline_0_reaches_every_worker(monkeypatch, value):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub_downloads_allowed()
    env = runtime_env(dashboard=True)["env_vars"]
    assert all(env[v] == "0" for v in HUB_VARS), env  # not forced back to offline


def test_hf_id_offline_names_both_switches(monkeypatch, empty_hf_cache):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ConfigError) as e:
        load_backbone(LmConfig(model=MISSING_ID))
    msg = str(e.value)
    assert "\n" not in msg and "lm.model" in msg and MISSING_ID in msg
    assert "lm.allow_download: true" in msg and "HF_HUB_OFFLINE=0" in msg


def test_hf_id_with_allow_download_but_offline_env_names_the_env(monkeypatch, empty_hf_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as e:
        load_backbone(LmConfig(model=MISSING_ID, allow_download=True))
    assert "HF_HUB_OFFLINE=0" in str(e.value) and "allow_download: true" not in str(e.value)


def test_hf_id_with_both_switches_asks_the_hub(monkeypatch, empty_hf_cache):
    """Both switches on: from_pretrained is called with local_files_only=False (the Hub is asked) and
    remote code stays untrusted by default. The call is intercepted (no network here)."""
    import transformers

    seen = {}

    class Asked(Exception):
        pass

    def fake(source, **kw):
        seen.update(kw, source=source)
        raise Asked

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", fake)
    with pytest.raises(Asked):
        load_backbone(LmConfig(model=MISSING_ID, allow_download=True))
    assert seen == {"source": MISSING_ID, "local_files_only": False, "trust_remote_code": False}
    seen.clear()
    with pytest.raises(Asked):  # allow_download off: local files only, even with the env online
        load_backbone(LmConfig(model=MISSING_ID))
    assert seen["local_files_only"] is True


def test_a_submitted_jobs_own_env_vars_win(monkeypatch):
    """`ray job submit --runtime-env-json '{"env_vars": {"HF_HUB_OFFLINE": "0"}}'`: the job's variables reach every
    worker already; the driver's runtime env must not set them again (Ray refuses to merge a conflict)."""
    import json

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(
        {"runtime_env": {"env_vars": {"HF_HUB_OFFLINE": "0", "RAYGEN_CACHE": "/shared/cache"}}}))
    env = worker_env()
    assert "HF_HUB_OFFLINE" not in env and "RAYGEN_CACHE" not in env
    assert env["TRANSFORMERS_OFFLINE"] == "0" and env["TOKENIZERS_PARALLELISM"] == "false"
    from ray.runtime_env.runtime_env import _merge_runtime_env  # what ray.init does inside a submitted job

    job = json.loads(os.environ["RAY_JOB_CONFIG_JSON_ENV_VAR"])["runtime_env"]
    assert _merge_runtime_env(job, runtime_env(dashboard=True)) is not None
