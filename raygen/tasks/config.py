"""Config of the SFT task builders: templates, which alignment directions, mixing ratios, lengths."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from raygen.configbase import ConfigError
from raygen.tasks.templates import ALIGN_DIRECTIONS, TOKEN_DIRECTIONS, check_templates, merged_templates


@dataclass
class TasksConfig:
    templates: dict[str, list[str]] = field(default_factory=dict)
    """Instruction templates per task, replacing raygen.tasks.templates.DEFAULT_TEMPLATES for the tasks
    named (others keep the defaults); one template is drawn at random per example."""
    align_directions: list[str] = field(default_factory=lambda: list(ALIGN_DIRECTIONS))
    """STAR item-text <-> SID alignment directions used (subset of title2sid, desc2sid, titledesc2sid,
    sid2title, sid2desc, sid2titledesc); empty = no item alignment task."""
    token_directions: list[str] = field(default_factory=lambda: list(TOKEN_DIRECTIONS))
    """TS-Align single-token directions used (subset of token2desc, desc2token); empty = none."""
    seqrec_format: Literal["sequence", "prompt"] = "sequence"
    """Next-item training format. 'sequence': one example per training user (window), a fixed
    `sequence_prefix` then the SIDs of the user's items in order, with the loss on every item after
    the first (raygen.tasks.sequence); 'prompt': one chat example per (history, target) sample from
    the `seqrec` templates, loss on the answer. Evaluation, RL and `recommend` prompt the same way."""
    sequence_prefix: str = "Items a user bought, in order:"
    """Fixed text before the item SIDs in the sequence format."""
    align_ratio: float = 0.5
    """Item-alignment examples mixed into SFT per seqrec example (0 = none). In the sequence format
    a seqrec example is a user window holding up to max_history + 1 targets."""
    token_ratio: float = 0.25
    """Token-alignment examples mixed into SFT per seqrec example (0 = none)."""
    search_ratio: float = 0.0
    """STAR's search task: query -> SID examples (the corpus stage's train-split queries) mixed into SFT
    per seqrec example (0 = none; needs corpus.n_queries > 0)."""
    max_history: int = 20
    """Most recent history items shown in a seqrec prompt (sequence format: the context each target
    sees at least, and the history length of evaluation prompts)."""
    history_sep: str = ", "
    """Separator between history SIDs in a seqrec prompt."""
    max_text_chars: int = 256
    """Item titles/descriptions and token descriptions are cut to this many characters."""
    system_prompt: str = ""
    """System message put before every prompt ('' = none; a chat template may add its own default)."""
    rl_holdout_share: float = 0.0
    """RL prompts the SFT model never trained on: the last train target of this share of the users (a fixed
    seeded choice) is withheld from SFT and the rl stage's prompts are exactly those positions
    (raygen.tasks.holdout). 0 = SFT on every train target and RL on the train split's positions, which the
    SFT model has largely memorised. Evaluation and its baselines are unchanged (they see every train row)."""
    seed: int = 0
    """Seed of template choice, sampling and shuffling."""

    def validate(self) -> None:
        check_templates(self.templates)
        for name, chosen, valid in (("align_directions", self.align_directions, ALIGN_DIRECTIONS),
                                    ("token_directions", self.token_directions, TOKEN_DIRECTIONS)):
            bad = [d for d in chosen if d not in valid]
            if bad:
                raise ConfigError(f"tasks.{name}: unknown direction(s) {bad}; valid: {list(valid)}")
        for name in ("align_ratio", "token_ratio", "search_ratio"):
            if getattr(self, name) < 0:
                raise ConfigError(f"tasks.{name}: must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.rl_holdout_share < 1.0:
            raise ConfigError(f"tasks.rl_holdout_share: must be in [0, 1), got {self.rl_holdout_share}")
        for name in ("max_history", "max_text_chars"):
            if getattr(self, name) < 1:
                raise ConfigError(f"tasks.{name}: must be >= 1, got {getattr(self, name)}")

    def all_templates(self) -> dict[str, list[str]]:
        """Templates of every task (defaults plus this config's replacements)."""
        return merged_templates(self.templates)
