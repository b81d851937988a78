"""Effective rank and cosine numbers on known matrices; PNGs are written."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from raygen.lm.diagnostics import cosine_matrix, diagnose, effective_rank, matrix_numbers, spectrum


def test_effective_rank_known_values():
    assert effective_rank(np.array([3.0, 3.0, 3.0, 0.0])) == pytest.approx(3.0)
    assert effective_rank(np.array([5.0])) == pytest.approx(1.0)
    assert effective_rank(np.zeros(4)) == 0.0
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(50, 2)))
    v, _ = np.linalg.qr(rng.normal(size=(16, 2)))
    rank2 = u @ np.diag([2.0, 2.0]) @ v.T  # rank 2, equal singular values
    assert effective_rank(spectrum(rank2)) == pytest.approx(2.0, abs=1e-6)
    skewed = u @ np.diag([10.0, 0.1]) @ v.T
    assert 1.0 < effective_rank(spectrum(skewed)) < 1.2


def test_cosine_and_numbers():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(cosine_matrix(a, a), np.eye(2), atol=1e-12)
    sid = np.tile([[1.0, 1.0]], (5, 1))  # collapsed rows, like a 'mean' init
    nums, s_sid, _ = matrix_numbers(sid, np.eye(2))
    assert nums["sid_effective_rank"] == pytest.approx(1.0)
    assert nums["sid_sid_mean_cosine"] == pytest.approx(1.0)
    assert nums["text_sid_mean_cosine"] == pytest.approx(np.sqrt(0.5))


def test_diagnose_writes_pngs(tmp_path, tiny_llama):
    model = tiny_llama()
    n = model.get_input_embeddings().weight.shape[0]
    sid_ids = torch.arange(n - 20, n)
    with torch.no_grad():  # SID rows in a 2-D subspace -> effective rank ~2
        basis = torch.randn(2, 64, generator=torch.Generator().manual_seed(0))
        coef = torch.randn(20, 2, generator=torch.Generator().manual_seed(1))
        model.get_input_embeddings().weight[sid_ids] = coef @ basis
    nums = diagnose(model, sid_ids, tmp_path / "diag", tag="t")
    assert 1.0 < nums["sid_effective_rank"] <= 2.0 + 1e-6
    assert nums["text_effective_rank"] > 10  # random text rows are spread out
    assert nums["sid_rows"] == 20 and nums["dim"] == 64
    for name in nums["files"]:
        data = (tmp_path / "diag" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert not list((tmp_path / "diag").glob(".*"))  # no temp files left behind
