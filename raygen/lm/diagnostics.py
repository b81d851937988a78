"""How SID embeddings sit in the LM's embedding space (STAR Fig. 2 / Fig. 5 style analyses).

- singular-value spectrum and *effective rank* of the SID embedding matrix: Roy & Vetterli (2007),
  erank = exp(H(p)) with p_i = s_i / sum(s) over the singular values s. A collapsed init (every row
  the same vector, e.g. 'mean') has erank ~1; rows spread over many directions give a large erank.
- cosine similarity between sampled text-token rows and sampled SID rows (a heatmap): SA-Init rows
  should look like text rows, random rows are near-orthogonal to all of them.
Plots are matplotlib (Agg) PNGs written atomically; numbers come back as a dict for metrics.json.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from raygen.io import atomic_path


def effective_rank(singular_values: np.ndarray, eps: float = 1e-12) -> float:
    """Roy & Vetterli effective rank of a matrix given its singular values."""
    s = np.asarray(singular_values, dtype=np.float64)
    s = s[s > eps]
    if s.size == 0:
        return 0.0
    p = s / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def spectrum(matrix: np.ndarray) -> np.ndarray:
    """Singular values (descending) of a 2-D matrix."""
    return np.linalg.svd(np.asarray(matrix, dtype=np.float64), compute_uv=False)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b``."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def _save_png(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


def plot_spectrum(curves: dict[str, np.ndarray], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, s in curves.items():
        ax.plot(np.arange(1, len(s) + 1), s / max(s[0], 1e-12), label=label)
    ax.set_yscale("log")
    ax.set_xlabel("index")
    ax.set_ylabel("singular value / largest")
    ax.set_title(title)
    ax.legend()
    _save_png(fig, path)
    plt.close(fig)


def plot_heatmap(sim: np.ndarray, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    im = ax.imshow(sim, vmin=-1, vmax=1, cmap="coolwarm", aspect="auto")
    ax.set_xlabel("SID token rows (sample)")
    ax.set_ylabel("text token rows (sample)")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="cosine")
    _save_png(fig, path)
    plt.close(fig)


def matrix_numbers(sid: np.ndarray, text: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
    """Numbers for SID rows ``sid`` and text rows ``text`` (both [n, d]), plus both spectra."""
    s_sid, s_text = spectrum(sid), spectrum(text)
    cross = cosine_matrix(text, sid)
    within = cosine_matrix(sid, sid)
    off = within[~np.eye(len(sid), dtype=bool)] if len(sid) > 1 else np.zeros(1)
    return {
        "sid_rows": int(sid.shape[0]),
        "dim": int(sid.shape[1]),
        "sid_effective_rank": effective_rank(s_sid),
        "text_effective_rank": effective_rank(s_text),
        "sid_top_singular_values": [float(v) for v in s_sid[:10]],
        "sid_mean_norm": float(np.linalg.norm(sid, axis=1).mean()),
        "text_mean_norm": float(np.linalg.norm(text, axis=1).mean()),
        "sid_sid_mean_cosine": float(off.mean()),
        "text_sid_mean_cosine": float(cross.mean()),
        "text_sid_mean_abs_cosine": float(np.abs(cross).mean()),
    }, s_sid, s_text


def diagnose(model, sid_ids: torch.Tensor, out_dir: str | Path, tag: str, text_ids: torch.Tensor | None = None,
             sample: int = 64, seed: int = 0) -> dict:
    """Analyse the input-embedding rows of ``sid_ids`` against text-token rows; write PNGs, return numbers.

    Text rows are all rows not in ``sid_ids`` unless ``text_ids`` is given. The spectrum uses every SID
    row and an equally sized random sample of text rows (for reference); the heatmap uses ``sample``
    random rows of each. Files: ``{tag}_spectrum.png`` and ``{tag}_cosine.png`` in ``out_dir``.
    """
    out_dir = Path(out_dir)
    weight = model.get_input_embeddings().weight.detach().float().cpu()
    sid_ids = torch.as_tensor(sid_ids, dtype=torch.long)
    if text_ids is None:
        mask = torch.ones(weight.shape[0], dtype=torch.bool)
        mask[sid_ids] = False
        text_ids = torch.nonzero(mask).flatten()
    rng = np.random.default_rng(seed)
    text_pick = rng.choice(len(text_ids), size=min(len(sid_ids), len(text_ids)), replace=False)
    sid = weight[sid_ids].numpy()
    text = weight[text_ids[torch.from_numpy(text_pick)]].numpy()
    numbers, s_sid, s_text = matrix_numbers(sid, text)
    sid_pick = rng.choice(len(sid), size=min(sample, len(sid)), replace=False)
    heat = cosine_matrix(text[: min(sample, len(text))], sid[np.sort(sid_pick)])
    plot_spectrum({f"SID rows (erank {numbers['sid_effective_rank']:.1f})": s_sid,
                   f"text rows (erank {numbers['text_effective_rank']:.1f})": s_text},
                  out_dir / f"{tag}_spectrum.png", f"{tag}: singular values")
    plot_heatmap(heat, out_dir / f"{tag}_cosine.png", f"{tag}: cosine(text, SID)")
    numbers["files"] = [f"{tag}_spectrum.png", f"{tag}_cosine.png"]
    return numbers
