"""How does a run store grow without rewriting itself? Part files and an index.

    RUN/solutions.parquet, RUN/solutions.safetensors   the base: a compacted run is only this
                                                       (the layout every earlier version wrote)
    RUN/parts/index.json                               while the run has parts: which files
                                                       hold its solutions, with their sizes
    RUN/parts/part-GGGGGGGG.parquet, .safetensors      the rows and vectors of one append (or
                                                       of several, merged)

An append writes its own two part files, then a new index naming them: the index is the
commit point, and its size stays bounded because parts merge in tiers (16 parts of one tier
become one of the next: every row is rewritten about log16(N) times in all, never once per
append). Reading concatenates the base and the parts in index order. Compaction folds
everything back into the base and removes the index, so a finished run has the old layout.

Every step is one atomic rename or unlink, taken in an order that leaves a readable store
after a kill at any point: files the index does not name are leftovers of a write in flight,
never read, and removed by the next writer (`clean`). A listed file whose size differs from
the index's record is a torn or damaged part, and reading names it.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import StoreError

PARTS, INDEX = "parts", "index.json"
FORMAT = "protoscope-parts/1"
FANOUT = 16  # parts of one tier that merge into one of the next


def tier(rows: int) -> int:
    """0 below FANOUT rows, 1 below FANOUT**2, ...: parts merge with parts of about their own
    size, so a bulk append is never rewritten with every small one after it."""
    level = 0
    while rows >= FANOUT:
        rows, level = rows // FANOUT, level + 1
    return level


class Parts:
    """The part files and index of one run folder (the base files are the store's)."""

    def __init__(self, root: pathlib.Path, base_rows: str, base_vectors: str, write, read):
        self.root, self.folder = root, root / PARTS
        self.index_path = self.folder / INDEX
        self.base_rows, self.base_vectors = root / base_rows, root / base_vectors
        self._write, self._read = write, read  # the store's atomic_write and _read

    # -- the index ----------------------------------------------------------------------------
    def index(self) -> dict | None:
        """The committed index, or None when the run has no parts (a compact or old run)."""
        if not self.index_path.exists():
            return None
        index = self._read(self.index_path, lambda p: json.loads(p.read_text()))
        if not isinstance(index, dict) or index.get("format") != FORMAT or not isinstance(index.get("parts"), list):
            raise StoreError(f"{self.index_path} is damaged: not a {FORMAT} index")
        return index

    def _commit(self, index: dict) -> None:
        self._write(self.index_path,
                    lambda tmp: tmp.write_text(json.dumps(index, indent=1) + "\n"))

    def start_index(self) -> dict:
        """The index a first append begins from: the base as it is (read from its headers)."""
        index = {"format": FORMAT, "generation": 0, "base": None, "parts": [],
                 "next_solution_id": 0, "n_e": 0, "n_m": 0}
        if self.base_rows.exists() or self.base_vectors.exists():
            ids = self._read(self.base_rows, lambda p: pq.read_table(p, columns=["solution_id"]))
            ids = ids.column("solution_id").to_pylist()
            n_e, n_m = self.base_shapes()
            index["base"] = {"rows": len(ids), "n_e": n_e, "n_m": n_m,
                             "parquet_bytes": self.base_rows.stat().st_size,
                             "safetensors_bytes": self.base_vectors.stat().st_size}
            index.update(next_solution_id=max(ids) + 1 if ids else 0, n_e=n_e, n_m=n_m)
        return index

    def base_shapes(self) -> tuple[int, int]:
        """Rows of e and m in the base safetensors, from its header (0, 0 when absent)."""
        if not self.base_vectors.exists():
            return 0, 0
        return self._read(self.base_vectors, _shapes)

    # -- writing ------------------------------------------------------------------------------
    def append(self, frame: pa.Table, e: torch.Tensor, m: torch.Tensor, index: dict) -> dict:
        """Write one part (vectors first, then rows), commit it, merge a full tier; returns
        the new index. `frame` already carries its solution ids and global vector indices."""
        self.folder.mkdir(exist_ok=True)
        generation = index["generation"] + 1
        entry = self._write_part(generation, frame, e, m, index["n_e"], index["n_m"])
        index = {**index, "generation": generation, "parts": index["parts"] + [entry],
                 "next_solution_id": index["next_solution_id"] + len(frame),
                 "n_e": index["n_e"] + len(e), "n_m": index["n_m"] + len(m)}
        self._commit(index)
        return self._merge_full_tiers(index)

    def _write_part(self, generation: int, frame: pa.Table, e: torch.Tensor, m: torch.Tensor,
                    e_start: int, m_start: int, level: int | None = None) -> dict:
        name = f"part-{generation:08d}"
        vectors, rows = self.folder / f"{name}.safetensors", self.folder / f"{name}.parquet"
        tensors = {"e": e.detach().float().cpu().contiguous(), "m": m.detach().float().cpu().contiguous()}
        self._write(vectors, lambda tmp: save_file(tensors, str(tmp)))
        self._write(rows, lambda tmp: pq.write_table(frame, tmp))
        first = frame.column("solution_id")[0].as_py() if len(frame) else -1
        return {"name": name, "tier": tier(len(frame)) if level is None else level,
                "rows": len(frame), "first_id": first, "e_start": e_start, "n_e": len(e),
                "m_start": m_start, "n_m": len(m), "parquet_bytes": rows.stat().st_size,
                "safetensors_bytes": vectors.stat().st_size}

    def _merge_full_tiers(self, index: dict) -> dict:
        while True:
            parts = index["parts"]
            run = 0
            while run < len(parts) and parts[-1 - run]["tier"] == parts[-1]["tier"]:
                run += 1
            if run < FANOUT:
                return index
            index = self._merge(index, len(parts) - run, len(parts))

    def _merge(self, index: dict, start: int, stop: int, base: bool = False) -> dict:
        """Replace parts[start:stop] (and the base too, with `base`) by one part."""
        chosen = index["parts"][start:stop]
        frames = [self.rows(p) for p in chosen]
        vectors = [self.vectors(p) for p in chosen]
        if base and index["base"]:
            frames.insert(0, self.base_frame(index["base"]))
            vectors.insert(0, self.base_tensors(index["base"]))
        frame = concat(frames)
        e = torch.cat([v["e"] for v in vectors]) if vectors else torch.zeros(0, 0)
        m = torch.cat([v["m"] for v in vectors]) if vectors else torch.zeros(0, 0)
        first = index["base"] if base and index["base"] else chosen[0]
        e_start = 0 if base and index["base"] else first["e_start"]
        m_start = 0 if base and index["base"] else first["m_start"]
        generation = index["generation"] + 1
        entry = self._write_part(generation, frame, e, m, e_start, m_start,
                                 level=tier(len(frame)) if not base else 99)
        parts = index["parts"][:start] + [entry] + index["parts"][stop:]
        merged = {**index, "generation": generation, "parts": parts}
        if base:
            merged["base"] = None
        self._commit(merged)
        for p in chosen:  # now leftovers; a kill here leaves them for `clean`
            self._remove(p["name"])
        return merged

    def compact(self, index: dict) -> None:
        """Fold the base and every part into the base files, then drop the index.

        1. one part holding everything, committed with no base (the old base is now unused);
        2. the base files become hard links to that part's files (each an atomic rename);
        3. the index is removed: the base alone is the store; 4. the part files go."""
        if index["parts"] and (index["base"] or len(index["parts"]) > 1):
            index = self._merge(index, 0, len(index["parts"]), base=True)
        if index["parts"]:
            (part,) = index["parts"]
            for suffix, target in ((".safetensors", self.base_vectors), (".parquet", self.base_rows)):
                source = self.folder / f"{part['name']}{suffix}"
                self._write(target, lambda tmp, source=source: _link_or_copy(source, tmp))
        self.index_path.unlink()
        shutil.rmtree(self.folder, ignore_errors=True)

    def clean(self) -> None:
        """Remove part files no committed index names (a writer killed mid-append or
        mid-merge); a damaged index is left alone for reading to name."""
        if not self.folder.is_dir():
            return
        try:
            index = self.index()
        except StoreError:
            return
        if index is None:
            shutil.rmtree(self.folder, ignore_errors=True)
            return
        keep = {INDEX} | {f"{p['name']}{s}" for p in index["parts"] for s in (".parquet", ".safetensors")}
        for path in self.folder.iterdir():
            if path.name not in keep and path.is_file():
                path.unlink(missing_ok=True)

    def remove_all(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _remove(self, name: str) -> None:
        for suffix in (".parquet", ".safetensors"):
            (self.folder / f"{name}{suffix}").unlink(missing_ok=True)

    # -- reading ------------------------------------------------------------------------------
    def _checked(self, path: pathlib.Path, expected: int) -> pathlib.Path:
        if not path.exists():
            raise StoreError(f"{path} is missing (named by {self.index_path})")
        size = path.stat().st_size
        if size != expected:
            raise StoreError(f"{path} is damaged: {size} bytes where {self.index_path} records "
                             f"{expected} (a torn or overwritten part)")
        return path

    def rows(self, part: dict) -> pa.Table:
        path = self._checked(self.folder / f"{part['name']}.parquet", part["parquet_bytes"])
        frame = self._read(path, pq.read_table)
        if len(frame) != part["rows"]:
            raise StoreError(f"{path} is damaged: {len(frame)} rows where {self.index_path} records {part['rows']}")
        return frame

    def vectors(self, part: dict) -> dict[str, torch.Tensor]:
        path = self._checked(self.folder / f"{part['name']}.safetensors", part["safetensors_bytes"])
        tensors = self._read(path, _load)
        self._same_shapes(path, (len(tensors["e"]), len(tensors["m"])), part)
        return tensors

    def vector_shapes(self, part: dict) -> None:
        """Check a part's vectors file against the index from its header alone."""
        path = self._checked(self.folder / f"{part['name']}.safetensors", part["safetensors_bytes"])
        self._same_shapes(path, self._read(path, _shapes), part)

    def base_tensors_checked(self, base: dict) -> None:
        path = self._checked(self.base_vectors, base["safetensors_bytes"])
        self._same_shapes(path, self._read(path, _shapes), base)

    def _same_shapes(self, path: pathlib.Path, shapes: tuple[int, int], entry: dict) -> None:
        if shapes != (entry["n_e"], entry["n_m"]):
            raise StoreError(f"{path} is damaged: e and m have {shapes[0]} and {shapes[1]} rows "
                             f"where {self.index_path} records {entry['n_e']} and {entry['n_m']}")

    def base_frame(self, base: dict) -> pa.Table:
        path = self._checked(self.base_rows, base["parquet_bytes"])
        return self._read(path, pq.read_table)

    def base_tensors(self, base: dict) -> dict[str, torch.Tensor]:
        path = self._checked(self.base_vectors, base["safetensors_bytes"])
        tensors = self._read(path, _load)
        self._same_shapes(path, (len(tensors["e"]), len(tensors["m"])), base)
        return tensors


def concat(tables: list[pa.Table]) -> pa.Table:
    """Parts in order as one table (a base written by an older version may lack a column the
    parts have: it reads as null there)."""
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="permissive")


def _load(path: pathlib.Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
        if names != {"e", "m"}:
            raise KeyError(f"expected tensors 'e' and 'm', found {sorted(names)}")
        return {k: f.get_tensor(k) for k in ("e", "m")}


def _shapes(path: pathlib.Path) -> tuple[int, int]:
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
        if names != {"e", "m"}:
            raise KeyError(f"expected tensors 'e' and 'm', found {sorted(names)}")
        return f.get_slice("e").get_shape()[0], f.get_slice("m").get_shape()[0]


def _link_or_copy(source: pathlib.Path, tmp: pathlib.Path) -> None:
    """A hard link costs nothing; a filesystem without them gets a copy."""
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
