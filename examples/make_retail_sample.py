"""Write the small retail sample under examples/retail/ (committed; rerun to regenerate, fixed seed).

    python examples/make_retail_sample.py

interactions.parquet: customer (string ids), sku (string ids), ts (Arrow timestamps), plus a column the
config ignores (quantity); items.csv: sku, name, details, material, maker, department. The shape is what a
team's export looks like: string ids of their own, a few consecutive repeats, a sku that has no catalog row,
so the data stage's counted skips show up in its metrics.json.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

OUT = Path(__file__).resolve().parent / "retail"
DEPARTMENTS = {
    "Garden": (["hose", "rake", "trowel", "planter", "sprinkler", "shears"], ["rubber", "steel", "clay"]),
    "Kitchen": (["kettle", "whisk", "skillet", "colander", "grater", "ladle"], ["steel", "cast iron", "silicone"]),
    "Workshop": (["hammer", "chisel", "clamp", "level", "saw", "drill bit"], ["steel", "carbide", "oak"]),
    "Outdoor": (["tent", "lantern", "stove", "hammock", "cooler", "compass"], ["nylon", "aluminium", "canvas"]),
}
MAKERS = ["Acme", "Northwind", "Fabrikam", "Contoso"]


def make(seed: int = 7, n_users: int = 60, per_dept: int = 12) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(seed)
    items = []
    for dept, (nouns, materials) in DEPARTMENTS.items():
        for j in range(per_dept):
            noun, mat = nouns[j % len(nouns)], materials[j % len(materials)]
            items.append({"sku": f"{dept[:2].upper()}-{1000 + 7 * j}", "name": f"{mat.title()} {noun}",
                          "details": f"A {mat} {noun} for the {dept.lower()}, size {1 + j % 4}.",
                          "material": mat, "maker": MAKERS[j % len(MAKERS)], "department": dept})
    items[5]["name"] = ""  # one item without a title: the fallback, counted
    skus = [it["sku"] for it in items]
    depts = list(DEPARTMENTS)
    rows = []
    t0 = np.datetime64("2024-01-01T00:00:00", "s")
    for u in range(n_users):
        favourite = rng.integers(len(depts))
        n = int(rng.integers(5, 12))
        t = t0 + np.timedelta64(int(rng.integers(0, 86400 * 30)), "s")
        pos = int(rng.integers(per_dept))
        for _ in range(n):
            d = favourite if rng.random() < 0.75 else rng.integers(len(depts))
            pos = (pos + int(rng.integers(1, 3))) % per_dept  # walks along the department's shelf
            sku = skus[d * per_dept + pos]
            rows.append({"customer": f"C{u:04d}", "sku": sku, "ts": t, "quantity": int(rng.integers(1, 4))})
            if rng.random() < 0.08:  # a consecutive repeat (bought again at once): collapsed, counted
                rows.append({**rows[-1], "ts": t + np.timedelta64(60, "s")})
            t = t + np.timedelta64(int(rng.integers(3600, 86400 * 3)), "s")
    rows.append({"customer": "C0000", "sku": "XX-0001", "ts": t0, "quantity": 1})  # no catalog row: fallback
    inter = pa.table({"customer": [r["customer"] for r in rows], "sku": [r["sku"] for r in rows],
                      "ts": pa.array([r["ts"] for r in rows], pa.timestamp("s")),
                      "quantity": [r["quantity"] for r in rows]})
    return inter, pa.Table.from_pylist(items)


def main() -> None:
    inter, items = make()
    OUT.mkdir(parents=True, exist_ok=True)
    pq.write_table(inter, OUT / "interactions.parquet")
    pacsv.write_csv(items, OUT / "items.csv")
    print(f"{inter.num_rows} interactions, {items.num_rows} items -> {OUT}")


if __name__ == "__main__":
    main()
