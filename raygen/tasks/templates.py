"""Instruction templates of the SFT tasks: defaults, allowed fields, checks, rendering.

Templates are ``str.format`` strings. Each task fills a fixed set of fields; a template must use
every *required* field of its task and nothing outside the *allowed* ones (checked when the
config loads, so a typo such as ``{titel}`` fails early with the task named). Fields:

- ``history``: the user's past items as SID texts joined by ``TasksConfig.history_sep``, oldest first;
- ``sid``: one item's SID text; ``title``/``description``: the item's text (cut to max_text_chars);
- ``token``: one SID token; ``level``: its level, 1-based (1 = coarsest);
- ``description`` (token tasks): the token cluster's description, or its keywords when it has none;
  ``keywords``: the cluster's keywords, comma-separated;
- ``query``: a shopper's search query for the item (the corpus stage's ``queries.parquet``).

Tasks: ``seqrec`` (history -> next SID); STAR alignment, both directions between an item's text and
its SID (``title2sid``, ``desc2sid``, ``titledesc2sid``, ``sid2title``, ``sid2desc``,
``sid2titledesc``); TS-Align, per single SID token (``token2desc``, ``desc2token``); STAR's search
task, query -> SID (``query2sid``; evaluation prompts with its first template).
"""
from __future__ import annotations

import string

from raygen.configbase import ConfigError

ALIGN_DIRECTIONS = ("title2sid", "desc2sid", "titledesc2sid", "sid2title", "sid2desc", "sid2titledesc")
TOKEN_DIRECTIONS = ("token2desc", "desc2token")
SEARCH_TASK = "query2sid"
TASKS = ("seqrec",) + ALIGN_DIRECTIONS + TOKEN_DIRECTIONS + (SEARCH_TASK,)

REQUIRED: dict[str, set[str]] = {
    "seqrec": {"history"},
    "title2sid": {"title"},
    "desc2sid": {"description"},
    "titledesc2sid": {"title", "description"},
    "sid2title": {"sid"},
    "sid2desc": {"sid"},
    "sid2titledesc": {"sid"},
    "token2desc": {"token"},
    "desc2token": {"description"},
    "query2sid": {"query"},
}
OPTIONAL: dict[str, set[str]] = {"token2desc": {"level"}, "desc2token": {"level", "keywords"}}

DEFAULT_TEMPLATES: dict[str, list[str]] = {
    "seqrec": [
        "The user has interacted with these items, in order: {history}. "
        "Predict the next item the user will interact with.",
        "Here is a user's item history: {history}. Which item comes next?",
        "Given the purchase sequence {history}, recommend the next item.",
    ],
    "title2sid": [
        "Which item has the title \"{title}\"? Answer with its item ID.",
        "Give the item ID of the product titled: {title}",
    ],
    "desc2sid": [
        "Which item matches this description? {description}",
        "Give the item ID of the product described as: {description}",
    ],
    "titledesc2sid": [
        "Which item is this? Title: {title}. Description: {description}",
        "Give the item ID of the product \"{title}\": {description}",
    ],
    "sid2title": [
        "What is the title of item {sid}?",
        "Give the title of the product with ID {sid}.",
    ],
    "sid2desc": [
        "Describe item {sid}.",
        "What is the description of the product with ID {sid}?",
    ],
    "sid2titledesc": [
        "Give the title and description of item {sid}.",
        "What is item {sid}? Give its title, then its description.",
    ],
    "token2desc": [
        "What kind of items does the level-{level} code {token} stand for?",
        "Describe the items grouped under the code {token}.",
    ],
    "desc2token": [
        "Which level-{level} code stands for items like this: {description}",
        "Give the code for the item group described as: {description}",
    ],
    "query2sid": [  # as STAR's three search instructions
        "A shopper searched for \"{query}\". Which item are they looking for? Answer with its item ID.",
        "Search query: {query}\nGive the item ID of the product that best matches it.",
        "Find the product for this search: {query}",
    ],
}

ANSWER_TITLEDESC = "{title}\n{description}"
"""Answer format of ``sid2titledesc``."""


def template_fields(template: str) -> set[str]:
    """Field names a ``str.format`` template uses (ConfigError on a malformed template)."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise ConfigError(f"malformed template {template!r}: {e}") from None


def check_templates(templates: dict[str, list[str]], key: str = "tasks.templates") -> None:
    """ConfigError unless every task is known, non-empty, and uses exactly its allowed fields."""
    for task, items in templates.items():
        if task not in TASKS:
            raise ConfigError(f"{key}: unknown task {task!r}; tasks are {list(TASKS)}")
        if not items:
            raise ConfigError(f"{key}.{task}: needs at least one template")
        allowed = REQUIRED[task] | OPTIONAL.get(task, set())
        for i, t in enumerate(items):
            used = template_fields(t)
            if "" in used or any(not f.isidentifier() for f in used):
                raise ConfigError(f"{key}.{task}[{i}]: use named fields only, got {t!r}")
            if used - allowed:
                raise ConfigError(f"{key}.{task}[{i}]: unknown field(s) {sorted(used - allowed)}; "
                                  f"allowed {sorted(allowed)}")
            if REQUIRED[task] - used:
                raise ConfigError(f"{key}.{task}[{i}]: missing field(s) {sorted(REQUIRED[task] - used)}")


def merged_templates(overrides: dict[str, list[str]]) -> dict[str, list[str]]:
    """The defaults with the tasks named in ``overrides`` replaced."""
    return {**DEFAULT_TEMPLATES, **overrides}


check_templates(DEFAULT_TEMPLATES, "DEFAULT_TEMPLATES")
