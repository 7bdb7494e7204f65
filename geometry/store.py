"""Where do solutions live between stages? The run store: one directory, plain formats.

    RUN/manifest.json          model, config, command line, versions, times, status
    RUN/texts.jsonl            one Text per line (ids, token ids, per-token NLL once scored)
    RUN/solutions.safetensors  "e" [n_e, d], "m" [n_m, d]; a shared vector is stored once
    RUN/solutions.parquet      one row per solution, indexing its vectors
    RUN/analysis/NAME.parquet  one tidy table per analysis
    RUN/analysis/NAME.safetensors  tensors an analysis keeps (e.g. trained curves)

Every write goes to a temporary file that is then renamed over the old one, so a reader, or a
run killed at any moment, sees either the old or the new file. Vectors are written before the
rows that index them: a kill between the two leaves unreferenced vectors, never a row without
vectors, and a resumed run refits only what has no row. Nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
from collections.abc import Callable, Iterator

import pandas as pd
import torch
from filelock import FileLock, Timeout
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import StoreError
from .tables import conform
from .texts import Text

MANIFEST, TEXTS, VECTORS, ROWS = "manifest.json", "texts.jsonl", "solutions.safetensors", "solutions.parquet"
FORMAT = "protoscope-run/1"

COLUMNS = {
    "solution_id": "int64", "text_id": "string", "seed": "int64", "length": "int64",
    "arrangement": "string", "share": "string", "share_group": "int64",
    "e_index": "int64", "m_index": "int64", "accuracy": "float64", "c_tokens": "int64",
    "loss": "float64", "steps": "int64", "restarts": "int64", "seconds": "float64",
    "converged": "bool", "status": "string", "failure": "string", "init_from": "int64",
    "recipe": "string", "method": "string",
}


def atomic_write(path: pathlib.Path, write: Callable[[pathlib.Path], None]) -> None:
    """Write via `write(tmp)` then rename over `path` (atomic on POSIX)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # some writers create 0600 files; every store file reads alike
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a read-only or full disk: one line naming the file
        raise StoreError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: pathlib.Path, data) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str) + "\n"))


def make_folder(path: pathlib.Path) -> None:
    """Create a run folder (and its parents); one that cannot be created is a StoreError."""
    if path.exists() and not path.is_dir():
        raise StoreError(f"{path} is a file, not a run folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(f"cannot create run folder {path}: {err.strerror or err}") from None


def empty_solutions() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in COLUMNS.items()})


class RunStore:
    """A run directory: create it, append solutions as they finish, load and validate it."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self._manifest: dict | None = None

    # -- creating and opening ---------------------------------------------------------------
    @classmethod
    def create(cls, path, manifest: dict, texts: list[Text]) -> RunStore:
        store = cls(path)
        make_folder(store.path)
        if (store.path / MANIFEST).exists():
            raise StoreError(f"{store.path} already holds a run; use --overwrite to replace it")
        store.write_texts(texts)
        write_json(store.path / MANIFEST, {"format": FORMAT, "status": "running", **manifest})
        return store

    @classmethod
    def open(cls, path) -> RunStore:
        """Open and validate a run store; anything wrong is a StoreError naming the file."""
        store = cls(path)
        if not (store.path / MANIFEST).is_file():
            raise StoreError(f"{store.path} is not a protoscope run (no {MANIFEST})")
        manifest = store.manifest
        if manifest.get("format") != FORMAT:
            raise StoreError(f"{store.path / MANIFEST} is not a {FORMAT} manifest")
        store.texts()
        rows, vectors = store.solutions(), store.vectors()
        for name in ("e", "m"):
            index, n = rows[f"{name}_index"], len(vectors[name])
            if len(index) and (index.max() >= n or index.min() < 0):
                raise StoreError(f"{store.path / ROWS} indexes {name} rows beyond {store.path / VECTORS}")
        return store

    @property
    def manifest(self) -> dict:
        if self._manifest is None:
            manifest = _read(self.path / MANIFEST, lambda p: json.loads(p.read_text()))
            if not isinstance(manifest, dict):
                raise StoreError(f"{self.path / MANIFEST} is damaged: not a JSON object")
            # Callers read these as objects; a wrong type would end in a traceback, not a line.
            for key in ("model", "config", "analyses"):
                if key in manifest and not isinstance(manifest[key], dict):
                    raise StoreError(f"{self.path / MANIFEST} is damaged: {key!r} is not a JSON object")
            self._manifest = manifest
        return self._manifest

    def update_manifest(self, **fields) -> None:
        self._manifest = {**self.manifest, **fields}
        write_json(self.path / MANIFEST, self._manifest)

    @contextlib.contextmanager
    def lock(self, wait: float = 0) -> Iterator[None]:
        """Hold the run's lock; a second process gets a clear StoreError instead of a race."""
        make_folder(self.path)
        lock = FileLock(str(self.path / ".lock"))
        try:
            lock.acquire(timeout=wait)
        except Timeout:
            raise StoreError(f"{self.path} is in use by another protoscope process") from None
        except OSError as err:  # e.g. a read-only folder
            raise StoreError(f"cannot lock {self.path / '.lock'}: {err.strerror or err}") from None
        for stale in self.path.glob(".*.tmp-*"):  # left by a writer killed mid-write
            stale.unlink(missing_ok=True)
        try:
            yield
        finally:
            lock.release()

    # -- reading ----------------------------------------------------------------------------
    def texts(self) -> list[Text]:
        def parse(p: pathlib.Path) -> list[Text]:
            return [Text.from_json(json.loads(line)) for line in p.read_text().splitlines() if line.strip()]

        return _read(self.path / TEXTS, parse)

    def texts_frame(self) -> pd.DataFrame:
        records = [{**t.to_json(), "n_tokens": len(t.token_ids)} for t in self.texts()]
        return pd.DataFrame.from_records(records)

    def solutions(self) -> pd.DataFrame:
        path = self.path / ROWS
        if not path.exists():
            return empty_solutions()
        frame = _read(path, pd.read_parquet)
        missing = set(COLUMNS) - set(frame.columns)
        if missing:
            raise StoreError(f"{path} is damaged: missing columns {sorted(missing)}")
        return frame

    def vectors(self) -> dict[str, torch.Tensor]:
        path = self.path / VECTORS
        if not path.exists():
            d = int(self.manifest.get("model", {}).get("d_model", 0))
            return {"e": torch.zeros(0, d), "m": torch.zeros(0, d)}
        tensors = _read(path, load_file)
        if set(tensors) != {"e", "m"}:
            raise StoreError(f"{path} is damaged: expected tensors 'e' and 'm', found {sorted(tensors)}")
        return tensors

    def solution_vectors(self, solution_ids=None) -> tuple[pd.DataFrame, torch.Tensor, torch.Tensor]:
        """Rows (in the order asked) and their e [k, d] and m [k, d] vectors."""
        rows = self.solutions()
        if solution_ids is not None:
            rows = rows.set_index("solution_id").loc[list(solution_ids)].reset_index()
        vectors = self.vectors()
        e = vectors["e"][torch.tensor(rows["e_index"].tolist(), dtype=torch.long)]
        m = vectors["m"][torch.tensor(rows["m_index"].tolist(), dtype=torch.long)]
        return rows, e, m

    def analysis(self, name: str) -> pd.DataFrame | None:
        path = self.path / "analysis" / f"{name}.parquet"
        return _read(path, pd.read_parquet) if path.exists() else None

    # -- writing ----------------------------------------------------------------------------
    def write_texts(self, texts: list[Text]) -> None:
        """Replace texts.jsonl (at creation, and as scoring.ensure_scored adds their NLL)."""
        lines = "".join(json.dumps(t.to_json()) + "\n" for t in texts)
        atomic_write(self.path / TEXTS, lambda tmp: tmp.write_text(lines))

    def append(self, rows: list[dict], e: torch.Tensor, m: torch.Tensor) -> list[int]:
        """Append solutions whose `e_row` / `m_row` index the given new vectors; returns ids."""
        vectors, old = self.vectors(), self.solutions()
        n_e, n_m = len(vectors["e"]), len(vectors["m"])
        new = {"e": torch.cat([vectors["e"], e.float().cpu()]).contiguous(),
               "m": torch.cat([vectors["m"], m.float().cpu()]).contiguous()}
        atomic_write(self.path / VECTORS, lambda tmp: save_file(new, str(tmp)))
        start = int(old["solution_id"].max()) + 1 if len(old) else 0
        records = []
        for i, row in enumerate(rows):
            row = dict(row)
            row["e_index"], row["m_index"] = n_e + row.pop("e_row"), n_m + row.pop("m_row")
            records.append({"solution_id": start + i, **row})
        frame = pd.DataFrame.from_records(records)
        frame = frame.reindex(columns=list(COLUMNS)).astype(COLUMNS)
        table = pd.concat([old, frame], ignore_index=True) if len(old) else frame
        atomic_write(self.path / ROWS, lambda tmp: table.to_parquet(tmp, index=False))
        return list(range(start, start + len(records)))

    def analysis_tensors(self, name: str) -> Tensors | None:
        """RUN/analysis/NAME.safetensors (e.g. trained curves), or None when absent."""
        path = self.path / "analysis" / f"{name}.safetensors"
        if not path.exists():
            return None

        def parse(p: pathlib.Path) -> Tensors:
            with safe_open(str(p), framework="pt") as f:
                return Tensors({k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {})

        return _read(path, parse)

    def write_analysis(self, name: str, frame: pd.DataFrame | Tensors) -> pathlib.Path:
        """A table as NAME.parquet (in the table contract's columns, geometry/tables.py), or a
        `Tensors` mapping as NAME.safetensors."""
        folder = self.path / "analysis"
        folder.mkdir(exist_ok=True)
        if isinstance(frame, Tensors):
            path = folder / f"{name}.safetensors"
            tensors = {k: v.detach().float().cpu().contiguous() for k, v in frame.items()}
            atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=frame.metadata))
            return path
        path, frame = folder / f"{name}.parquet", conform(name, frame)
        atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
        return path


class Tensors(dict):
    """Named tensors an analysis keeps beside its tables (safetensors, never pickle), with
    string metadata."""

    def __init__(self, tensors=(), metadata: dict[str, str] | None = None):
        super().__init__(tensors)
        self.metadata = dict(metadata or {})


def _read(path: pathlib.Path, parse):
    """Parse a store file; a missing or damaged one is a StoreError naming it."""
    if not path.exists():
        raise StoreError(f"{path} is missing")
    try:
        return parse(path)
    except (OSError, ValueError, KeyError, TypeError, SafetensorError, UnicodeDecodeError) as err:
        raise StoreError(f"{path} is damaged: {type(err).__name__}: {_first_sentence(err)}") from None
    except Exception as err:  # pyarrow raises its own error types for a damaged parquet file
        if type(err).__module__.startswith("pyarrow"):
            raise StoreError(f"{path} is damaged: {_first_sentence(err)}") from None
        raise


def _first_sentence(err: Exception, limit: int = 160) -> str:
    """The first line and sentence of an error: pyarrow's go on with advice over several."""
    text = (str(err).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")
    return text[:limit]
