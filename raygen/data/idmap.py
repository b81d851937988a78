"""External ids <-> dense int64 indices: the maps the data stage writes beside items/samples.

``item_ids.parquet``: ``item_id`` int64 (the dense index every stage uses) -> ``external_id`` string (the
team's own id as text); ``user_ids.parquet``: ``user_index`` int64 -> ``external_id``. The original type
(``int64`` or ``string``) is in the file's metadata under ``raygen.external_type``, so outputs give back
integers where the input had integers. Sources without a map (synthetic, minionerec, amazon2023) use their
item ids as they are: :class:`ItemIds` is then the identity.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from raygen.io import atomic_path

ITEM_MAP = "item_ids.parquet"
USER_MAP = "user_ids.parquet"
TYPE_KEY = b"raygen.external_type"


def id_map_table(index_name: str, external: pa.Array) -> pa.Table:
    """The map of dense indices ``0..n-1`` to ``external`` (int64 or string ids, in index order)."""
    kind = "int64" if pa.types.is_integer(external.type) else "string"
    table = pa.table({index_name: pa.array(range(len(external)), pa.int64()),
                      "external_id": external.cast(pa.string())})
    return table.replace_schema_metadata({TYPE_KEY: kind.encode()})


def write_id_map(path: str | Path, index_name: str, external: pa.Array) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(id_map_table(index_name, external), tmp)


class ItemIds:
    """Item id translation for user-facing input and output (``raygen recommend``, batch recommend)."""

    def __init__(self, external: list[str] | None = None, kind: str = "int64", path: str = ""):
        self.identity = external is None
        self.kind = kind
        self.path = path
        self._ext = external or []
        self._int = {e: i for i, e in enumerate(self._ext)}

    @classmethod
    def read(cls, data_dir: str | Path) -> "ItemIds":
        """The map in ``data_dir`` (a data stage folder), or the identity when the source wrote none."""
        path = Path(data_dir) / ITEM_MAP
        if not path.exists():
            return cls()
        table = pq.read_table(path)
        kind = (table.schema.metadata or {}).get(TYPE_KEY, b"string").decode()
        return cls(table.column("external_id").to_pylist(), kind, str(path))

    def _key(self, ext) -> str | None:
        if isinstance(ext, bool):
            return None
        if self.kind == "int64" and not isinstance(ext, int):
            try:
                ext = int(str(ext).strip())
            except ValueError:
                return None
        return str(ext).strip() if isinstance(ext, str) else str(ext)

    def internal(self, ext) -> int | None:
        """The dense index of an external id (int or text), or None when the catalog lacks it."""
        if self.identity:
            key = self._key(ext)
            return None if key is None else int(key)
        key = self._key(ext)
        return self._int.get(key) if key is not None else None

    def external(self, item: int):
        """The external id of a dense index: an int where the source's ids were integers, else a string. Items
        added after training (``raygen add-items``: indices past the map) keep their index."""
        if self.identity or not 0 <= item < len(self._ext):
            return int(item)
        ext = self._ext[item]
        return int(ext) if self.kind == "int64" else ext

    def externals(self, items: Iterable[int]) -> list:
        return [self.external(i) for i in items]
