#!/usr/bin/env python3
"""Reads vmi's pslist output with pyarrow and pandas and prints a few analyses.

    vmi plugins run pslist -r arrow -o out/pslist.arrow
    vmi plugins run pslist psaux -r parquet -o out/
    python3 samples/pandas_pslist.py out/

Needs pyarrow and pandas (`pip install pyarrow pandas`). Reads out/pslist.arrow (Arrow IPC
file) and/or out/pslist.parquet, whichever exist, and out/psaux.parquet if present.
"""

import codecs
import json
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def vmi_metadata(table: pa.Table) -> dict:
    """The vmi.* keys of the Arrow schema metadata (guest, kernel, plugin, errors...)."""
    meta = table.schema.metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items() if k.startswith(b"vmi.")}


def guest_bytes(text: str) -> bytes:
    """The guest's exact bytes of a vmi text cell (field metadata vmi.encoding = utf8-xescape):
    valid UTF-8 as is, \\xNN for any other byte, \\x5c for a backslash."""
    return codecs.escape_decode(text.encode("utf-8"))[0]


def read_arrow(path: Path) -> pa.Table:
    # An Arrow IPC *file* (Feather v2); pandas.read_feather(path) works too.
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def read_parquet(path: Path) -> pa.Table:
    # pyarrow restores the Arrow schema (types and vmi.* metadata) from the file.
    return pq.read_table(path)


def report(name: str, table: pa.Table) -> pd.DataFrame:
    meta = vmi_metadata(table)
    print(f"== {name}: {table.num_rows} rows from guest {meta.get('vmi.guest', '?')}"
          f" (kernel {meta.get('vmi.kernel.release', '?')}, collected {meta.get('vmi.collection.time', '?')})")
    for err in json.loads(meta.get("vmi.errors", "[]")):
        print(f"   note: {err}")
    print(table.schema.to_string(show_field_metadata=False, show_schema_metadata=False))
    return table.to_pandas()  # CREATION TIME becomes datetime64[ms, UTC]


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "out")
    frames = {}
    for path in (out / "pslist.arrow", out / "pslist.parquet"):
        if path.exists():
            reader = read_arrow if path.suffix == ".arrow" else read_parquet
            frames[path.name] = report(path.name, reader(path))
    if not frames:
        sys.exit(f"no pslist.arrow or pslist.parquet in {out}/: run `vmi plugins run pslist -r parquet -o {out}/`")

    ps = next(iter(frames.values()))
    if len(frames) == 2:
        a, b = frames.values()
        same = a.reset_index(drop=True).equals(b.reset_index(drop=True))
        print(f"\nArrow and Parquet hold the same rows: {same}")

    odd = ps[ps["COMM"].str.contains("\\", regex=False, na=False)]
    if len(odd):
        print("\n== process names with bytes that are not UTF-8 (exact bytes)")
        for pid, comm in zip(odd["PID"], odd["COMM"]):
            print(f"   {pid}: {guest_bytes(comm)!r}")

    print("\n== processes per COMM")
    print(ps.groupby("COMM").size().sort_values(ascending=False).head(10).to_string())

    print("\n== newest processes")
    cols = ["PID", "PPID", "COMM", "CREATION TIME"]
    print(ps.sort_values("CREATION TIME", ascending=False, na_position="last")[cols].head(10).to_string(index=False))

    print("\n== children per parent")
    kids = ps.groupby("PPID").size().rename("children")
    parents = ps.set_index("PID")["COMM"].rename("parent COMM")
    print(kids.to_frame().join(parents).sort_values("children", ascending=False).head(5).to_string())

    psaux = out / "psaux.parquet"
    if psaux.exists():
        args = read_parquet(psaux).to_pandas()[["PID", "ARGS"]]
        joined = ps.merge(args, on="PID", how="left")
        print("\n== newest processes with their command lines (pslist ⋈ psaux)")
        print(joined.sort_values("CREATION TIME", ascending=False)[["PID", "COMM", "ARGS"]].head(10).to_string(index=False))


if __name__ == "__main__":
    main()
