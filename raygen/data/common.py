"""Helpers shared by the data loaders: line reading, text clean-up, sample building, report.

Every loader turns its source into per-user chronological item sequences (or, for MiniOneRec,
ready-made evaluation rows) and uses the functions here to cut them into samples, so history
truncation and the leave-one-out split are written once.
"""
from __future__ import annotations

import ast
import codecs
import errno
import gzip
import json
import logging
import math
import os
import re
import stat
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from raygen.data.schema import SPLITS, DataError, SkipLog

log = logging.getLogger("raygen")

MAX_LITERAL_CHARS = 65_536
"""List literals longer than this are never given to ``ast.literal_eval`` (a 4 MiB literal of ints takes
it seconds and gigabytes); real descriptions are far shorter (Industrial: < 6,000 characters)."""

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
_ASCII_INT = re.compile(r"-?[0-9]+")
_INT_LIST = re.compile(r"\[\s*(?:-?[0-9]+\s*(?:,\s*-?[0-9]+\s*)*,?\s*)?\]")


def parse_int64(text: str) -> int | None:
    """``text`` (surrounding blanks allowed) as an int64 when it is a plain ASCII integer, else None.

    Stricter than ``int()``, which also takes ``'+3'``, ``'1_2'`` and non-ASCII digits (``'١٢'`` -> 12).
    """
    s = text.strip()
    if not _ASCII_INT.fullmatch(s):
        return None
    value = int(s)
    return value if INT64_MIN <= value <= INT64_MAX else None


def parse_int_list(text: str) -> list[int] | None:
    """A list literal of ints (``"[1, 2]"``) -> list; anything else -> None.

    The plain form is parsed in linear time without ``ast``; other forms (tuples, nested brackets)
    go to ``ast.literal_eval`` only when shorter than :data:`MAX_LITERAL_CHARS`.
    """
    s = text.strip()
    if _INT_LIST.fullmatch(s):
        inner = s[1:-1].strip().rstrip(",")
        return [int(p) for p in inner.split(",")] if inner else []
    if len(s) > MAX_LITERAL_CHARS:
        return None
    try:
        value = ast.literal_eval(s)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return None
    return list(value)


def non_finite(value) -> bool:
    """True for a float NaN or +-Infinity (what JSON's ``NaN`` / ``Infinity`` parse to)."""
    return isinstance(value, float) and not math.isfinite(value)


def _drop_non_finite(value, skips: SkipLog | None, where: str, field: str):
    """``value`` with NaN/Infinity (alone or as list elements) removed and counted under
    ``non_finite_number_field``: a missing value, never the text ``'nan'``."""
    def count():
        if skips is not None:
            skips.add("non_finite_number_field", f"{where} field {field!r}" if field else where)

    if non_finite(value):
        count()
        return None
    if isinstance(value, (list, tuple)) and any(non_finite(v) for v in value):
        count()
        return [v for v in value if not non_finite(v)]
    return value


def clean_text(value, skips: SkipLog | None = None, where: str = "", field: str = "") -> str:
    """A short text field (brand, store) as one stripped string; None, empty or NaN -> "" (NaN counted)."""
    value = _drop_non_finite(value, skips, where, field)
    return str(value).strip() if value else ""


def iter_lines(path: str | Path, skips: SkipLog) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each line of a text file (``.gz`` decompressed transparently).

    Lines are decoded one by one as UTF-8 (a UTF-8 byte-order mark opening the file is dropped); a line
    with invalid bytes is decoded with ``errors='replace'`` and counted under ``non_utf8_line`` with its
    ``file:line``.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):  # spreadsheet exports start with a BOM
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("utf-8", errors="replace")
                skips.add("non_utf8_line", f"{path.name}:{lineno}")
            yield lineno, text


def input_file(path: str | Path, hint: str = "") -> Path:
    """``path`` when it is a readable regular file, else a DataError saying what it is instead: missing,
    a dangling link, a symlink loop, a directory, unreadable. ``hint`` (what the folder must hold) is
    added to 'file not found'."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise DataError(str(path), None, None, f"dangling symlink (to {os.readlink(path)})") from None
        raise DataError(str(path), None, None, "file not found" + (f" ({hint})" if hint else "")) from None
    except OSError as e:
        what = ("symlink loop (a symbolic link that leads back to itself)" if e.errno == errno.ELOOP
                else e.strerror or str(e))
        raise DataError(str(path), None, None, what) from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(str(path), None, None, "is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(str(path), None, None, "not a regular file")
    return path


def iter_records(path: str | Path, skips: SkipLog) -> Iterator[tuple[int, dict]]:
    """Yield ``(line, dict)`` for each non-blank JSON line; malformed lines raise DataError."""
    path = Path(path)
    for lineno, text in iter_lines(path, skips):
        if not text.strip():
            continue
        try:
            rec = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(path.name, lineno, None, f"malformed JSON (column {e.colno}): {e.msg}") from None
        except (ValueError, RecursionError) as e:  # a number of > 4300 digits, nesting deeper than Python's stack
            raise DataError(path.name, lineno, None, f"unreadable JSON: {type(e).__name__}: {e}") from None
        if not isinstance(rec, dict):
            raise DataError(path.name, lineno, None, f"expected a JSON object, got {type(rec).__name__}")
        yield lineno, rec


def read_text(path: str | Path, skips: SkipLog) -> str:
    """The whole file as text, decoded per line as in :func:`iter_lines`."""
    return "".join(text for _, text in iter_lines(path, skips))


def _split_broken_literal(s: str) -> list[str] | str:
    """Best-effort parts of a list literal that ``ast.literal_eval`` rejects (e.g. an unescaped
    quote inside ``"['It's ...']"``): strip the brackets and outer quotes, split on ``', '``.
    Returns ``s`` itself when it does not look like a list of quoted strings."""
    if len(s) < 4 or s[1] not in ("'", '"') or s[1] != s[-2]:
        return s
    return [p.replace("\\n", " ") for p in re.split(r"""['"], ['"]""", s[2:-2])]


def clean_description(value, max_chars: int, skips: SkipLog, where: str, field: str = "description") -> str:
    """Normalise a description to one string.

    Accepts a list of strings, a Python-list literal string (``"['a', 'b']"``, parsed with
    ``ast.literal_eval``), a plain string or None. Parts are joined with a space and runs of
    whitespace collapsed. A literal that does not parse is split by hand when it looks like a
    list of quoted strings (``description_literal_repaired``), else kept verbatim
    (``description_unparsed``); text longer than ``max_chars`` is truncated
    (``description_truncated``). A literal longer than :data:`MAX_LITERAL_CHARS` is not parsed but split
    by hand (``description_literal_too_long``); NaN / Infinity (alone or in a list) count as missing
    (``non_finite_number_field``).
    """
    value = _drop_non_finite(value, skips, where, field)
    if value is None:
        return ""
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("[") and s.endswith("]") and len(s) > MAX_LITERAL_CHARS:
            value = _split_broken_literal(s)
            skips.add("description_literal_too_long", where)
        elif s.startswith("[") and s.endswith("]"):
            try:
                value = ast.literal_eval(s)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                value = _split_broken_literal(s)
                skips.add("description_unparsed" if value is s else "description_literal_repaired", where)
            else:
                value = _drop_non_finite(value, skips, where, field)
        else:
            value = s
    if isinstance(value, (list, tuple)):
        value = " ".join(str(p).strip() for p in value if p is not None and str(p).strip())
    text = " ".join(str(value).split())  # one line, single spaces
    if len(text) > max_chars:
        skips.add("description_truncated", where)
        text = text[:max_chars].rstrip()
    return text


def clean_categories(value, skips: SkipLog | None = None, where: str = "", field: str = "categories") -> list[str]:
    """Categories as a list of non-empty strings (from a list, a list-literal string, '' or None).

    NaN / Infinity (alone or as list elements) count as missing (``non_finite_number_field``); a literal
    longer than :data:`MAX_LITERAL_CHARS` is kept as one string, unparsed (``categories_literal_too_long``).
    """
    value = _drop_non_finite(value, skips, where, field)
    if value is None:
        return []
    if isinstance(value, str):
        s = value.strip()
        if not s:
            return []
        if s.startswith("[") and len(s) <= MAX_LITERAL_CHARS:
            try:
                value = ast.literal_eval(s)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return [s]
            value = _drop_non_finite(value, skips, where, field)
            if value is None:
                return []
        else:
            if s.startswith("[") and skips is not None:
                skips.add("categories_literal_too_long", where)
            return [s]
    if isinstance(value, (list, tuple)):
        return [str(c).strip() for c in value if c is not None and str(c).strip()]
    return [str(value)]


def truncate(history: Sequence[int], max_history: int) -> list[int]:
    """The most recent ``max_history`` items of a chronological history."""
    return list(history[-max_history:]) if max_history > 0 else list(history)


def sample(user: str, history: Sequence[int], target: int, split: str, max_history: int) -> dict:
    """One samples-table row with the history truncated."""
    return {"user_id": user, "history": truncate(history, max_history), "target": int(target), "split": split}


def _window(seq: Sequence[int], i: int, max_history: int) -> Sequence[int]:
    """``seq[:i]`` cut to its last ``max_history`` items without copying the rest (linear in a long sequence)."""
    return seq[max(0, i - max_history):i] if max_history > 0 else seq[:i]


def prefix_samples(user: str, seq: Sequence[int], max_history: int, split: str = "train") -> list[dict]:
    """Every prefix of a chronological sequence as a sample: ``seq[:i] -> seq[i]`` for ``i >= 1``."""
    return [sample(user, _window(seq, i, max_history), seq[i], split, max_history) for i in range(1, len(seq))]


def loo_samples(user: str, seq: Sequence[int], max_history: int) -> list[dict]:
    """Leave-one-out split of one user's chronological sequence.

    The last item is the test target, the second last the valid target, and every earlier
    position ``i >= 1`` a training target; each history is everything before its target.
    A sequence of two items yields only a test sample, of one item nothing.
    """
    n = len(seq)
    out = []
    for i in range(1, n):
        split = "test" if i == n - 1 else "valid" if i == n - 2 else "train"
        out.append(sample(user, _window(seq, i, max_history), seq[i], split, max_history))
    return out


def split_counts(samples: pa.Table) -> dict:
    """Number of samples per split (every split named, zero when empty)."""
    vc = pc.value_counts(samples["split"]).to_pylist() if samples.num_rows else []
    counts = {d["values"]: d["counts"] for d in vc}
    return {s: int(counts.get(s, 0)) for s in SPLITS}


def split_warnings(samples: pa.Table) -> list[str]:
    """Warnings (each also logged) about evaluation splits that load but mislead: an empty 'valid' split
    (nothing for early stopping, keep-best validation or the eval's serving choice to select on) and a
    'valid' split holding the same rows as 'test' (model selection on the test set)."""
    split = samples["split"]
    valid = samples.filter(pc.equal(split, "valid"))
    test = samples.filter(pc.equal(split, "test"))
    out = []
    if valid.num_rows == 0:
        out.append("the valid split is empty: early stopping, keep-best validation and the eval's serving "
                   "choice have no validation rows")
    elif valid.num_rows == test.num_rows and _rows(valid) == _rows(test):
        out.append(f"the valid and test splits hold the same {valid.num_rows} rows: whatever is selected on "
                   "valid is selected on the test set")
    for w in out:
        log.warning("data: %s", w)
    return out


def _rows(table: pa.Table) -> list[tuple]:
    """The (user, history, target) rows of a samples table, sorted (a multiset to compare)."""
    cols = (table["user_id"].to_pylist(), table["history"].to_pylist(), table["target"].to_pylist())
    return sorted((u, tuple(h), t) for u, h, t in zip(*cols))


def make_report(source: str, items: pa.Table, samples: pa.Table, skips: SkipLog, **extra) -> dict:
    """The JSON-able data report for metrics.json."""
    return {
        "source": source,
        "items": items.num_rows,
        "samples": split_counts(samples),
        "users": len(pc.unique(samples["user_id"])) if samples.num_rows else 0,
        "skips": skips.to_dict(),
        **extra,
    }
