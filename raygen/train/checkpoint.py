"""The one checkpoint format of align, sft and rl, and the one atomic model export.

A checkpoint folder holds ``trainable.safetensors`` (what training can change, see
:func:`raygen.train.masks.trainable_state_dict`), ``optimizer.pt`` (``{"optimizer": ..., "scheduler":
... or None}``, loaded with ``weights_only=True``) and ``state.json`` (the step and whatever the trainer
needs to resume). The Ray Train workers write it inside Ray Train's checkpoint folders (Ray keeps and
prunes those); the RL learner, which runs outside Ray Train, writes ``<root>/step_NNNNNNN`` folders
atomically with :func:`save_step` and prunes them itself.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import tempfile
from contextlib import contextmanager
from typing import Iterator

import torch

from raygen import storage
from raygen.io import load_tensors, read_json, save_tensors, write_json

log = logging.getLogger("raygen")

TRAINABLE, OPTIMIZER, STATE = "trainable.safetensors", "optimizer.pt", "state.json"
_STEP = re.compile(r"^step_(\d{6,})$")


def step_name(step: int) -> str:
    """Checkpoint folder name of ``step`` (the same for Ray Train's and the RL learner's)."""
    return f"step_{step:07d}"


def write(folder: Path, state: dict[str, torch.Tensor] | None, optimizer=None, scheduler=None,
          meta: dict | None = None) -> None:
    """Write a checkpoint into the existing ``folder``; ``None`` parts are left out (a DeepSpeed rank
    other than 0 writes only its engine shard elsewhere)."""
    folder = Path(folder)
    if state is not None:
        save_tensors(folder / TRAINABLE, state)
    if optimizer is not None:
        torch.save({"optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None}, folder / OPTIMIZER)
    if meta is not None:
        write_json(folder / STATE, meta)


def read_meta(folder: Path) -> dict:
    return read_json(Path(folder) / STATE)


def read_trainable(folder: Path) -> dict[str, torch.Tensor]:
    return load_tensors(Path(folder) / TRAINABLE)


def restore_optimizer(folder: Path, optimizer, scheduler=None, device: torch.device | str = "cpu") -> None:
    saved = torch.load(Path(folder) / OPTIMIZER, map_location=device, weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    if scheduler is not None and saved.get("scheduler") is not None:
        scheduler.load_state_dict(saved["scheduler"])


def save_step(root: Path, step: int, state: dict[str, torch.Tensor], optimizer, meta: dict, keep: int,
              scheduler=None, extra: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """Write ``<root>/step_NNNNNNN`` atomically (a temporary folder renamed into place), then delete all
    but the newest ``keep`` step folders of ``root`` (only folders named like this function names them).
    ``extra``: more safetensors files of the folder, ``{file name: tensors}`` (e.g. the best state)."""
    root = Path(root)
    final, tmp = root / step_name(step), root / f".{step_name(step)}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    write(tmp, state, optimizer, scheduler, meta={"step": step, **meta})
    for name, tensors in (extra or {}).items():
        save_tensors(tmp / name, tensors)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    done = sorted((p for p in root.iterdir() if _STEP.match(p.name)), key=lambda p: int(_STEP.match(p.name).group(1)))
    for old in done[:-max(1, keep)]:
        shutil.rmtree(old)
    return final


def latest_step(root: Path) -> Path | None:
    """The complete step folder (it has ``state.json``) with the highest step under ``root``, or None."""
    root = Path(root)
    if not root.exists():
        return None
    done = [p for p in root.iterdir() if _STEP.match(p.name) and (p / STATE).exists()]
    return max(done, key=lambda p: int(_STEP.match(p.name).group(1)), default=None)


def save_model_atomic(model, out: Path, tokenizer_dir: str | Path | None = None) -> Path:
    """``save_pretrained`` (safetensors) into a temporary folder beside ``out`` with the tokenizer of
    ``tokenizer_dir`` (when it has one), then rename it onto ``out``: readers never see half a model."""
    from transformers import AutoTokenizer

    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer_dir is not None and has_tokenizer(tokenizer_dir):  # tiny test models may come without one
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp)
    elif tokenizer_dir is not None:
        log.info("no tokenizer in %s: %s saved without one", tokenizer_dir, out)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def has_tokenizer(model_dir: str | Path) -> bool:
    d = Path(model_dir)
    return any((d / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


@contextmanager
def export_location(location: str) -> Iterator[Path]:
    """Yield the local folder to export a model into for ``location``: a local path is used as is; for a
    URI a temporary folder on this node, uploaded to ``location`` (replacing what an earlier attempt left
    there) when the block succeeds."""
    if not storage.is_uri(location):
        yield Path(location)
        return
    with tempfile.TemporaryDirectory(prefix="raygen-export-") as tmp:
        yield Path(tmp) / "model"
        storage.delete_folder(location)
        n = storage.upload_folder(Path(tmp) / "model", location)
        log.info("final model uploaded to %s (%d files)", location, n)


def fetch_model(location: str, out: Path) -> Path:
    """Download the model folder ``location`` (uploaded by :func:`export_location`) into the local
    ``out`` atomically (a temporary folder renamed onto it), then delete the uploaded copy."""
    out = Path(out)
    tmp = out.parent / f".{out.name}.fetch-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    if storage.download_folder(location, tmp) == 0:
        raise FileNotFoundError(f"no exported model at {location}")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    storage.delete_folder(location)
    return out


def run_storage(location: str) -> dict:
    """``RunConfig`` storage arguments: for a URI, the driver's pyarrow filesystem and the path in it, so the
    controller and workers on every node reach the same endpoint (pickled with its endpoint, not with any
    secret: each process resolves credentials from its own environment or instance role)."""
    if not storage.is_uri(location):
        return {"storage_path": location}
    fs, path = storage.filesystem(location)
    return {"storage_path": path, "storage_filesystem": fs}
