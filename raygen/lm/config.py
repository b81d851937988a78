"""Config of the ``lm`` stage: which backbone, how to shrink it, how to initialise the SID rows."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from raygen.configbase import ConfigError

INIT_STRATEGIES = ("random", "mean", "sa_init")


@dataclass
class LmConfig:
    model: str = "smollm2"
    """Causal LM: 'smollm2' (packaged SmolLM2-135M-Instruct, see raygen.models), a local folder or an HF id."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weight dtype the backbone is loaded and saved in."""
    num_layers: int = 0
    """Decoder layers kept: 0 = all; N > 0 keeps the first N (shrinks the model to fit CPU budgets)."""
    trust_remote_code: bool = False
    """Allow model code shipped with a checkpoint to run (off: only architectures transformers knows)."""
    allow_download: bool = False
    """Let the lm stage fetch ``model`` (an HF hub id) from the Hugging Face Hub. Needs the user's own
    ``HF_HUB_OFFLINE=0`` in the driver's environment too (raygen sets HF_HUB_OFFLINE=1 otherwise, see
    raygen.models); the stage saves the model into the run, so no worker downloads it. Off: runs never
    download; an HF id must then already be in the local HF cache."""
    init: Literal["random", "mean", "sa_init"] = "sa_init"
    """How new SID embedding rows start: 'random' N(0, init_std), 'mean' of the pretrained vocabulary rows,
    'sa_init' mean of the LM's own embeddings of the token's cluster keywords (STAR's SA-Init)."""
    sa_init_depth: int = 3
    """With init='sa_init': SID levels 0..depth-1 get keyword init; deeper levels (e.g. the
    collision-breaking extra level) and tokens without a usable keyword get 'mean'."""
    sa_init_prefix_space: bool = True
    """Tokenise each keyword in its mid-sentence form ' keyword' (byte-level BPE gives whole-word tokens:
    SmolLM2 splits 'shoes' into 'sh'+'oes' but ' shoes' is one token); whitespace-only pieces are ignored."""
    sa_init_rescale: bool = False
    """With init='sa_init': scale each keyword row to the mean L2 norm of the pretrained vocabulary rows
    (direction kept). A mean of many keyword embeddings is shorter than a real token row, and the more
    keywords the shorter (SmolLM2: 1.4-2.2 vs a vocabulary mean of 3.2). Off by default = plain mean
    pooling as the TS-Rec paper describes SA-Init; the lm stage's metrics record `vocab_mean_norm`,
    `sid_mean_norm` and `sa_init_raw_mean_norm` under `init` either way."""
    init_std: float = 0.02
    """Standard deviation of init='random'."""
    seed: int = 0
    """Seed of the random init (and of the row sampling in the diagnostics)."""

    def validate(self) -> None:
        if self.num_layers < 0:
            raise ConfigError(f"lm.num_layers: must be >= 0 (0 = all layers), got {self.num_layers}")
        if self.sa_init_depth < 0:
            raise ConfigError(f"lm.sa_init_depth: must be >= 0, got {self.sa_init_depth}")
        if self.init_std <= 0:
            raise ConfigError(f"lm.init_std: must be > 0, got {self.init_std}")
        if self.init not in INIT_STRATEGIES:
            raise ConfigError(f"lm.init: {self.init!r} is not one of {list(INIT_STRATEGIES)}")
