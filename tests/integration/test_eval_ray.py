"""Distributed constrained beam search over Ray actors returns exactly the local results, in order."""
from __future__ import annotations

import pytest
import torch

from raygen.configbase import Resources
from raygen.generation.beam import constrained_beam_search

pytestmark = pytest.mark.integration


def test_distributed_matches_local(tiny_llama, ray_local, tmp_path):
    from raygen.eval.ray_layer import evaluate_distributed

    vocab, n_codes = 120, 6
    model = tiny_llama(vocab_size=vocab, initializer_range=0.2)
    model.save_pretrained(tmp_path / "m", safe_serialization=True)
    g = torch.Generator().manual_seed(0)
    codes = torch.randperm(n_codes ** 3, generator=g)[:40]
    sid = torch.stack([codes // n_codes ** 2, (codes // n_codes) % n_codes, codes % n_codes], 1)
    sid = sid + (vocab - 3 * n_codes) + n_codes * torch.arange(3)
    prompts = [torch.randint(4, vocab - 3 * n_codes, (n,), generator=g).tolist() for n in (4, 11, 2, 7, 9)]

    local = constrained_beam_search(model, prompts, sid, beam_width=5, pad_id=3, batch_size=2)
    dist = evaluate_distributed(str(tmp_path / "m"), prompts, sid, beam_width=5, pad_id=3, batch_size=2,
                                resources=Resources(count=2, cpus=1))
    assert dist[0].shape == (len(prompts), 5)
    assert torch.equal(dist[0], local[0])
    torch.testing.assert_close(dist[1], local[1], atol=1e-5, rtol=0)
