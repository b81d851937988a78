"""Generation: catalog-constrained decoding and the one generation actor pool, shared by evaluation
and by RL rollouts.

Pure torch cores: :mod:`.trie` (the one SID trie), :mod:`.beam` (constrained beam search, ``left_pad``),
:mod:`.backends` (the backend interface, the transformers backend: beam search and constrained
sampling), :mod:`.sync` (the plain, LoRA-merged weights a backend loads, and their checksum).
:mod:`.vllm_backend` is the vLLM backend (optional dependency) and its worker extension for weight
loads. Thin Ray layer: :mod:`.pool` (:class:`RolloutPool`: N actors, each one backend, contiguous
shards gathered in order, one-``ray.put`` weight broadcast; :class:`LocalPool` without Ray).
Evaluation (:mod:`raygen.eval.ray_layer`) calls the pool in beam mode; RL (:mod:`raygen.rl.loop`)
samples rollouts from it and syncs the learner's weights into it.
"""
from raygen.lazy import exports_of, lazy_exports

_EXPORTS = exports_of(**{
    "raygen.generation.trie": ('SidTrie',),
    "raygen.generation.beam": ('constrained_beam_search', 'left_pad'),
    "raygen.generation.backends": ('HFBackend', 'RolloutBackend', 'Rollouts', 'constrained_sample', 'make_backend'),
    "raygen.generation.sync": ('merged_state_dict', 'state_checksum'),
    "raygen.generation.pool": ('LocalPool', 'RolloutPool'),
})
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
