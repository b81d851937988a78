"""TasksConfig / template validation: typos and bad values are clear ConfigErrors."""
from __future__ import annotations

import pytest

from raygen.configbase import ConfigError, from_dict
from raygen.tasks.config import TasksConfig
from raygen.tasks.templates import DEFAULT_TEMPLATES, TASKS, template_fields


def test_defaults_cover_every_task():
    cfg = from_dict(TasksConfig, {})
    assert set(cfg.all_templates()) == set(TASKS) == set(DEFAULT_TEMPLATES)
    assert template_fields("x {title} {description}!") == {"title", "description"}


def test_override_replaces_one_task():
    cfg = from_dict(TasksConfig, {"templates": {"sid2title": ["Title of {sid}?"]}})
    assert cfg.all_templates()["sid2title"] == ["Title of {sid}?"]
    assert cfg.all_templates()["seqrec"] == DEFAULT_TEMPLATES["seqrec"]


@pytest.mark.parametrize("data, match", [
    ({"templates": {"seqrec": ["{histroy}"]}}, r"tasks.templates.seqrec\[0\]: unknown field"),
    ({"templates": {"seqrec": ["no fields"]}}, "missing field"),
    ({"templates": {"sid2title": ["{sid} {title}"]}}, "unknown field"),  # would leak the answer
    ({"templates": {"seqrec": ["{} {history}"]}}, "named fields"),
    ({"templates": {"seqrec": ["{history"]}}, "malformed"),
    ({"templates": {"nope": ["{x}"]}}, "unknown task"),
    ({"templates": {"seqrec": []}}, "at least one"),
    ({"align_directions": ["sid2price"]}, "align_directions"),
    ({"token_directions": ["title2sid"]}, "token_directions"),
    ({"align_ratio": -0.1}, "align_ratio"),
    ({"max_history": 0}, "max_history"),
    ({"max_len": 512}, "max_len"),  # removed (read by nothing): sft.max_len / align.max_len set the budget
])
def test_bad_config(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(TasksConfig, data)
