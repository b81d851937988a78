"""Reading a team's own tables (``data.source: table``): locate the files, scan interactions in batches.

A location is a file, a folder (every file under it, recursively, except hidden or ``_``-prefixed ones, as
pyarrow.dataset skips them) or a glob (``data/part-*.parquet``), a local path or any URI pyarrow.fs opens
(``s3://``, ``gs://``, ``hdfs://``, ``file://``). Files are read with pyarrow.dataset (Parquet, CSV with or
without a UTF-8 BOM, JSON Lines), one file and one record batch at a time, so the interactions never exist
as Python objects: what is kept per interaction is its two ids (Arrow arrays), an int64 timestamp and its
read position (int64, for file:row in skip examples and for a deterministic tie-break).
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv  # noqa: F401  (pa.csv.ParseOptions)
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from raygen.data.schema import DataError, SkipLog

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv", ".jsonl": "json",
           ".ndjson": "json", ".json": "json"}
"""File extension -> pyarrow.dataset format (``data.table.format: auto``)."""
_GLOB = re.compile(r"[*?\[]")
_INT_TEXT = r"^\s*-?[0-9]+\s*$"
_ZONED = r"(Z|[+-][0-9]{2}:?[0-9]{2})\s*$"


def _filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` of a location: the project's storage layer when present, else pyarrow.fs."""
    try:
        from raygen.storage import filesystem
    except ImportError:  # the storage layer lands separately; pyarrow.fs is what it wraps
        filesystem = None
    if filesystem is not None:
        return filesystem(location)
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    import os

    return pafs.LocalFileSystem(), os.path.abspath(location)


def _visible(path: str, base: str) -> bool:
    rel = path[len(base):].lstrip("/") if path.startswith(base) else path
    return not any(part.startswith((".", "_")) for part in rel.split("/"))


def list_files(location: str) -> tuple[pafs.FileSystem, list[str]]:
    """The files a location names, sorted by path; DataError when it names none."""
    parts = location.split("/")
    glob_at = next((i for i, p in enumerate(parts) if _GLOB.search(p)), None)
    base_loc = location if glob_at is None else "/".join(parts[:glob_at]) or "."
    try:
        fs, base = _filesystem(base_loc)
        info = fs.get_file_info(base)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise DataError(location, None, None, f"cannot open: {str(e).splitlines()[0]}") from None
    if info.type == pafs.FileType.NotFound:
        raise DataError(location, None, None, "no such file or folder")
    if info.type == pafs.FileType.File and glob_at is None:
        return fs, [base]
    found = [f.path for f in fs.get_file_info(pafs.FileSelector(base, recursive=True))
             if f.type == pafs.FileType.File and _visible(f.path, base)]
    if glob_at is not None:
        pattern = base.rstrip("/") + "/" + "/".join(parts[glob_at:])
        found = [p for p in found if fnmatch.fnmatchcase(p, pattern)]
    if not found:
        raise DataError(location, None, None, "no files match" if glob_at is not None else "the folder has no files")
    return fs, sorted(found)


def file_format(paths: list[str], fmt: str, location: str) -> str:
    """The pyarrow.dataset format of ``paths``: ``fmt`` unless 'auto', else from the file extensions."""
    if fmt != "auto":
        return "json" if fmt == "jsonl" else fmt
    kinds = set()
    for p in paths:
        name = p.rsplit("/", 1)[-1].lower()
        ext = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        if ext not in FORMATS:
            raise DataError(p, None, None, f"cannot tell the format from the extension {ext or '(none)'!r}: "
                                           "set data.table.format (parquet, csv or jsonl)")
        kinds.add(FORMATS[ext])
    if len(kinds) > 1:
        raise DataError(location, None, None, f"mixed file formats {sorted(kinds)}: point at one kind of file")
    return kinds.pop()


def open_table(location: str, fmt: str) -> tuple[list[str], ds.Dataset]:
    """``(file labels, dataset)`` of a location; labels are the paths as given in DataError/skip messages."""
    fs, paths = list_files(location)
    kind = file_format(paths, fmt, location)
    if kind == "csv" and all(p.lower().endswith(".tsv") for p in paths):
        kind = ds.CsvFileFormat(parse_options=pa.csv.ParseOptions(delimiter="\t"))
    try:
        dataset = ds.dataset(paths, filesystem=fs, format=kind)
    except (OSError, pa.ArrowException) as e:
        raise DataError(location, None, None, f"unreadable as {kind}: {str(e).splitlines()[0]}") from None
    return paths, dataset


def _short(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def check_columns(dataset: ds.Dataset, paths: list[str], wanted: dict[str, str]) -> None:
    """DataError naming the file and column when a file lacks a configured column (``wanted``: field -> column)."""
    for frag, path in zip(dataset.get_fragments(), paths):
        try:
            names = set(frag.physical_schema.names)
        except (OSError, pa.ArrowException) as e:
            raise DataError(path, None, None, f"unreadable: {str(e).splitlines()[0]}") from None
        for fld, col in wanted.items():
            if col not in names:
                raise DataError(path, None, col, f"no such column (data.table.{fld}); columns: {sorted(names)}")


def id_array(arr: pa.Array) -> pa.Array:
    """Ids as int64 (any integer type) or string (anything else); empty strings become nulls."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_integer(arr.type):
        return pc.cast(arr, pa.int64())
    arr = pc.cast(arr, pa.string())
    return pc.if_else(pc.equal(pc.utf8_trim_whitespace(arr), ""), pa.scalar(None, pa.string()), arr)


def _parse_iso_python(values: list) -> list:
    """Per-value ISO-8601 parse (microseconds since the epoch, naive = UTC; None when unparsable): the fallback
    for a batch whose strings Arrow's vectorised cast rejects, so one bad value costs only its own batch."""
    out = []
    for v in values:
        try:
            d = datetime.fromisoformat(v.strip())
        except (ValueError, AttributeError):
            out.append(None)
            continue
        d = d if d.tzinfo else d.replace(tzinfo=timezone.utc)
        out.append(int(d.timestamp() * 1_000_000) if d.year > 1 else None)
    return out


def _iso_micros(arr: pa.Array, zoned: bool) -> pa.Array:
    tp = pa.timestamp("us", tz="UTC" if zoned else None)
    try:
        return pc.cast(pc.cast(arr, tp), pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array(_parse_iso_python(arr.to_pylist()), pa.int64())


def timestamps(arr: pa.Array) -> pa.Array:
    """Timestamps as int64 (null where missing or unparsable). Integer epochs stay in their own unit; Arrow
    timestamps and dates and ISO-8601 strings become microseconds since the epoch (naive = UTC); integer text
    (``"1700000000"``) is an epoch. Only the order matters downstream: one column, one unit."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return timestamps(arr.dictionary_decode())
    if pa.types.is_integer(t):
        return pc.cast(arr, pa.int64())
    if pa.types.is_floating(t):
        finite = pc.and_(pc.is_finite(arr), pc.less(pc.abs(arr), 9.2e18))
        return pc.cast(pc.if_else(finite, arr, pa.scalar(None, t)), pa.int64(), safe=False)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return pc.cast(pc.cast(arr, pa.timestamp("us", tz=getattr(t, "tz", None))), pa.int64())
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        return pa.nulls(len(arr), pa.int64())
    arr = pc.cast(arr, pa.string())
    out = pa.nulls(len(arr), pa.int64())
    is_int = pc.fill_null(pc.match_substring_regex(arr, _INT_TEXT), False)
    zoned = pc.fill_null(pc.match_substring_regex(arr, _ZONED), False)
    naive = pc.and_(pc.invert(is_int), pc.invert(zoned))
    for mask, conv in ((is_int, lambda a: pc.cast(pc.utf8_trim_whitespace(a), pa.int64())),
                       (zoned, lambda a: _iso_micros(a, True)), (naive, lambda a: _iso_micros(a, False))):
        sel = pc.and_(mask, pc.is_valid(arr))
        part = arr.filter(sel)
        if len(part):
            try:
                vals = conv(part)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # integer text beyond int64
                vals = pa.nulls(len(part), pa.int64())
            out = pc.replace_with_mask(out, sel, vals)
    return out


@dataclass
class Interactions:
    """What the scan keeps: ids (Arrow chunks), timestamps and read positions (numpy), file offsets."""

    users: list = field(default_factory=list)
    items: list = field(default_factory=list)
    ts: list = field(default_factory=list)
    pos: list = field(default_factory=list)
    files: list = field(default_factory=list)
    starts: list = field(default_factory=list)
    rows_read: int = 0

    def where(self, pos: int) -> str:
        """``file:row N`` (1-based data row of that file) of a read position."""
        f = int(np.searchsorted(np.asarray(self.starts), pos, side="right")) - 1
        return f"{self.files[f]}:row {pos - self.starts[f] + 1}"

    def skip(self, skips: SkipLog, reason: str, positions: np.ndarray) -> None:
        """Count the interactions at ``positions`` under ``reason``, with the first few as examples."""
        for p in positions[: skips.max_examples]:
            skips.add(reason, self.where(int(p)))
        skips.counts[reason] += max(0, len(positions) - skips.max_examples)


def scan_interactions(location: str, fmt: str, columns: dict[str, str], skips: SkipLog,
                      batch_rows: int = 1 << 20) -> Interactions:
    """Read user, item and timestamp columns (``columns``: 'user'/'item'/'timestamp' -> column name) of every
    file, batch by batch. Rows with a null user, item or timestamp, or an unparsable timestamp, are counted
    skips (``null_user``, ``null_item``, ``null_timestamp``, ``bad_timestamp``) with ``file:row`` examples."""
    paths, dataset = open_table(location, fmt)
    check_columns(dataset, paths, {f"{k}_column": v for k, v in columns.items()})
    out = Interactions()
    names = [columns["user"], columns["item"], columns["timestamp"]]
    for frag, path in zip(dataset.get_fragments(), paths):
        out.files.append(_short(path) if len({_short(p) for p in paths}) == len(paths) else path)
        out.starts.append(out.rows_read)
        try:
            for batch in frag.to_batches(columns=names, batch_size=batch_rows):
                _add_batch(out, batch, names, skips)
        except (OSError, pa.ArrowException) as e:
            raise DataError(path, None, None, f"unreadable: {str(e).splitlines()[0]}") from None
    return out


def _add_batch(out: Interactions, batch: pa.RecordBatch, names: list[str], skips: SkipLog) -> None:
    n = batch.num_rows
    pos = np.arange(out.rows_read, out.rows_read + n, dtype=np.int64)
    out.rows_read += n
    user, item = id_array(batch.column(0)), id_array(batch.column(1))
    raw_ts = batch.column(2)
    if pa.types.is_string(raw_ts.type) or pa.types.is_large_string(raw_ts.type):  # CSV reads '' as a string
        raw_ts = pc.if_else(pc.equal(pc.utf8_trim_whitespace(raw_ts), ""), pa.scalar(None, raw_ts.type), raw_ts)
    ts = timestamps(raw_ts)
    bad = np.zeros(n, dtype=bool)
    for reason, null in (("null_user", user.is_null()), ("null_item", item.is_null()),
                         ("null_timestamp", raw_ts.is_null()), ("bad_timestamp", ts.is_null())):
        mask = null.to_numpy(zero_copy_only=False) & ~bad
        if mask.any():
            out.skip(skips, reason, pos[mask])
            bad |= mask
    keep = pa.array(~bad)
    out.users.append(user.filter(keep))
    out.items.append(item.filter(keep))
    out.ts.append(ts.filter(keep).to_numpy(zero_copy_only=False).astype(np.int64))
    out.pos.append(pos[~bad])
