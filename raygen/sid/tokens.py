"""SID token strings: level ``l`` (0-based) and code ``c`` -> ``<{letter}_{c}>``, letter a, b, c, ...

    sid_text([12, 80, 7]) == "<a_12><b_80><c_7>"
    parse_sid("<a_12><b_80><c_7>") == [12, 80, 7]
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

MAX_LEVELS = 26
_TOKEN = re.compile(r"<([a-z])_(0|[1-9][0-9]*)>")


class SidParseError(ValueError):
    """Text that is not a well-formed SID."""


def sid_token(level: int, code: int) -> str:
    if not 0 <= level < MAX_LEVELS:
        raise ValueError(f"SID level {level} outside [0, {MAX_LEVELS})")
    if code < 0:
        raise ValueError(f"SID code must be >= 0, got {code}")
    return f"<{chr(ord('a') + level)}_{int(code)}>"


def sid_text(codes: Iterable[int]) -> str:
    """An item's SID text: its tokens concatenated, level a first."""
    return "".join(sid_token(lvl, c) for lvl, c in enumerate(codes))


def parse_token(token: str) -> tuple[int, int]:
    """``"<b_5>"`` -> ``(1, 5)``."""
    m = _TOKEN.fullmatch(token)
    if not m:
        raise SidParseError(f"not a SID token: {token!r}")
    return ord(m.group(1)) - ord("a"), int(m.group(2))


def parse_sid(text: str, levels: int | None = None) -> list[int]:
    """Codes of a SID text. Surrounding whitespace is ignored; anything else that is not a run of
    tokens with letters a, b, c, ... in order (and, if given, exactly ``levels`` of them) raises
    :class:`SidParseError`."""
    s = text.strip()
    codes: list[int] = []
    pos = 0
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m:
            raise SidParseError(f"malformed SID {text!r}: no token at character {pos} ({s[pos:pos + 12]!r})")
        level = ord(m.group(1)) - ord("a")
        if level != len(codes):
            raise SidParseError(f"malformed SID {text!r}: expected level "
                                f"{chr(ord('a') + len(codes))!r}, got {m.group(1)!r}")
        codes.append(int(m.group(2)))
        pos = m.end()
    if not codes:
        raise SidParseError(f"empty SID: {text!r}")
    if levels is not None and len(codes) != levels:
        raise SidParseError(f"SID {text!r} has {len(codes)} levels, expected {levels}")
    return codes


def present_tokens(codes: np.ndarray | Sequence[Sequence[int]]) -> list[tuple[int, int, str]]:
    """Every (level, code, token) used by at least one item, sorted by level then code."""
    codes = np.asarray(codes)
    return [(lvl, int(c), sid_token(lvl, int(c)))
            for lvl in range(codes.shape[1]) for c in np.unique(codes[:, lvl])]
