"""Where do solutions live between stages? The run store: one directory, plain formats.

    RUN/manifest.json          model, config, command line, versions, times, status
    RUN/texts.jsonl            one Text per line (ids, token ids, per-token NLL once scored)
    RUN/solutions.safetensors  "e" [n_e, d], "m" [n_m, d]; a shared vector is stored once
    RUN/solutions.parquet      one row per solution, indexing its vectors
    RUN/parts/                 while a writer appends: part files and their index (parts.py),
                               folded into the two files above when the writer lets go
    RUN/analysis/NAME.parquet  one tidy table per analysis
    RUN/analysis/NAME.safetensors  tensors an analysis keeps (e.g. trained curves)

Every write goes to a temporary file that is then renamed over the old one, so a reader, or a
run killed at any moment, sees either the old or the new file. An append writes only its own
part files (vectors before rows), then commits them in the parts index: it costs what it
appends, not what the run holds, and a kill before the commit leaves files that are never
read, so a resumed run refits only what has no row. Nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pathlib
from collections.abc import Callable, Iterator

import pandas as pd
import pyarrow as pa
import torch
from filelock import FileLock, Timeout
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import StoreError
from .parts import Parts, concat
from ..tables import conform
from .texts import Text

MANIFEST, TEXTS, VECTORS, ROWS = "manifest.json", "texts.jsonl", "solutions.safetensors", "solutions.parquet"
FORMAT = "protoscope-run/1"
TRAJECTORIES = "trajectories"
TRAJECTORY_LAYOUT = ("solution_<id>: [points, 4 + 2d] rows of step, restart, accuracy, total loss, "
                     "e (d), m (d); the last row is the solution's kept vectors")

COLUMNS = {
    "solution_id": "int64", "text_id": "string", "seed": "int64", "length": "int64",
    "arrangement": "string", "share": "string", "share_group": "int64",
    "e_index": "int64", "m_index": "int64", "accuracy": "float64", "c_tokens": "int64",
    "loss": "float64", "steps": "int64", "restarts": "int64", "seconds": "float64",
    "converged": "bool", "status": "string", "failure": "string", "init_from": "int64",
    "recipe": "string", "method": "string", "start": "string", "subspace": "string",
}
# columns a run written before them lacks: start (geometry/starts/names.py reads those) and
# subspace ("" or null: an ordinary fit; K:KIND for a fit in a K-dimensional subspace)
OPTIONAL = {"start", "subspace"}  # columns a run written before them lacks (geometry/starts/names.py reads those)


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


_SESSIONS: set[str] = set()  # the runs whose lock this process holds


def _key(path: pathlib.Path) -> str:
    return str(path.resolve())


def subspace_of(rows: pd.DataFrame) -> pd.Series:
    """Each solution's subspace label, "" for an ordinary fit (and for runs from before)."""
    if "subspace" not in rows.columns:
        return pd.Series("", index=rows.index, dtype=object)
    return rows["subspace"].astype(object).where(rows["subspace"].notna(), "").astype(str)


def empty_solutions() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in COLUMNS.items()})


@functools.lru_cache(maxsize=1)
def _schema() -> pa.Schema:
    """The parquet schema of solutions.parquet, pandas dtypes included (the parts read back
    as the frame a pandas-written file does)."""
    return pa.Schema.from_pandas(empty_solutions(), preserve_index=False)


class RunStore:
    """A run directory: create it, append solutions as they finish, load and validate it."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self._manifest: dict | None = None
        self.parts = Parts(self.path, ROWS, VECTORS, atomic_write, _read)

    # -- creating and opening ---------------------------------------------------------------
    @classmethod
    def create(cls, path, manifest: dict, texts: list[Text]) -> RunStore:
        store = cls(path)
        make_folder(store.path)
        if (store.path / MANIFEST).exists():
            raise StoreError(f"{store.path} already holds a run; use --overwrite to replace it")
        store.parts.remove_all()  # no manifest: parts of a run that was cleared
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
        rows, counts = store.solutions(), store.vector_counts()
        for name, n in zip(("e", "m"), counts):
            index = rows[f"{name}_index"]
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
        """Hold the run's lock; a second process gets a clear StoreError instead of a race.

        Leftovers of a writer killed mid-write are removed on taking it; parts (appends made
        while it is held, or left by a writer that was stopped) are compacted into the base
        files when the block ends without an error (an interrupted block leaves them as parts,
        which read the same)."""
        lock = self._acquire(wait)
        key = _key(self.path)
        _SESSIONS.add(key)
        try:
            for stale in self.path.glob(".*.tmp-*"):  # left by a writer killed mid-write
                stale.unlink(missing_ok=True)
            self.parts.clean()
            yield
            self._compact()
        finally:
            _SESSIONS.discard(key)
            lock.release()

    def _acquire(self, wait: float) -> FileLock:
        make_folder(self.path)
        lock = FileLock(str(self.path / ".lock"))
        try:
            lock.acquire(timeout=wait)
        except Timeout:
            raise StoreError(f"{self.path} is in use by another protoscope process") from None
        except OSError as err:  # e.g. a read-only folder
            raise StoreError(f"cannot lock {self.path / '.lock'}: {err.strerror or err}") from None
        return lock

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Writes happen under the run's lock: the caller's, or one taken for this write."""
        if _key(self.path) in _SESSIONS:
            yield
            return
        lock = self._acquire(0)
        try:
            yield
        finally:
            lock.release()

    def compact(self) -> bool:
        """Fold the parts into solutions.parquet / .safetensors (`protoscope compact RUN`);
        False when there was nothing to fold."""
        if _key(self.path) in _SESSIONS:
            return self._compact()
        with self.lock():
            return self._compact()

    def _compact(self) -> bool:
        index = self.parts.index()
        if index is None:
            return False
        self.parts.compact(index)
        return True

    # -- reading ----------------------------------------------------------------------------
    def texts(self) -> list[Text]:
        def parse(p: pathlib.Path) -> list[Text]:
            return [Text.from_json(json.loads(line)) for line in p.read_text().splitlines() if line.strip()]

        return _read(self.path / TEXTS, parse)

    def texts_frame(self) -> pd.DataFrame:
        records = [{**t.to_json(), "n_tokens": len(t.token_ids)} for t in self.texts()]
        return pd.DataFrame.from_records(records)

    def solutions(self) -> pd.DataFrame:
        def read(index: dict | None) -> pd.DataFrame:
            if index is None:
                if not (self.path / ROWS).exists():
                    return empty_solutions()
                return _read(self.path / ROWS, pd.read_parquet)
            frames = [self.parts.base_frame(index["base"])] if index["base"] else []
            frames += [self.parts.rows(p) for p in index["parts"]]
            return concat(frames).to_pandas() if frames else empty_solutions()

        frame = self._consistent(read)
        missing = set(COLUMNS) - set(frame.columns) - OPTIONAL
        if missing:
            raise StoreError(f"{self.path / ROWS} is damaged: missing columns {sorted(missing)}")
        return frame

    def vectors(self) -> dict[str, torch.Tensor]:
        def read(index: dict | None) -> dict[str, torch.Tensor]:
            if index is None:
                return self._legacy_vectors()
            parts = [self.parts.base_tensors(index["base"])] if index["base"] else []
            parts += [self.parts.vectors(p) for p in index["parts"]]
            if not parts:
                return self._no_vectors()
            return {k: torch.cat([p[k] for p in parts]) if len(parts) > 1 else parts[0][k]
                    for k in ("e", "m")}

        return self._consistent(read)

    def vector_counts(self) -> tuple[int, int]:
        """Rows of e and m stored, from the files' headers (no vector is loaded)."""
        def read(index: dict | None) -> tuple[int, int]:
            if index is None:
                return self.parts.base_shapes()
            n_e = n_m = 0
            if index["base"]:
                self.parts.base_tensors_checked(index["base"])
                n_e, n_m = index["base"]["n_e"], index["base"]["n_m"]
            for part in index["parts"]:
                self.parts.vector_shapes(part)
                n_e, n_m = n_e + part["n_e"], n_m + part["n_m"]
            return n_e, n_m

        return self._consistent(read)

    def _consistent(self, read):
        """`read(index)` at one committed index: a writer may merge parts away while this
        reads, so a missing or changed file is retried at the new index."""
        for attempt in range(5):
            index = self.parts.index()
            try:
                return read(index)
            except StoreError:
                if attempt == 4 or self.parts.index() == index:
                    raise

    def _no_vectors(self) -> dict[str, torch.Tensor]:
        d = int(self.manifest.get("model", {}).get("d_model", 0))
        return {"e": torch.zeros(0, d), "m": torch.zeros(0, d)}

    def _legacy_vectors(self) -> dict[str, torch.Tensor]:
        path = self.path / VECTORS
        if not path.exists():
            return self._no_vectors()
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
        """Append solutions whose `e_row` / `m_row` index the given new vectors; returns ids.

        Writes one part of k rows and commits it in the parts index (parts.py): O(k), whatever
        the run already holds."""
        if not rows:
            return []
        with self._writing():
            index = self.parts.index() or self.parts.start_index()
            start, n_e, n_m = index["next_solution_id"], index["n_e"], index["n_m"]
            records = []
            for i, row in enumerate(rows):
                row = dict(row)
                row["e_index"], row["m_index"] = n_e + row.pop("e_row"), n_m + row.pop("m_row")
                records.append({"solution_id": start + i, **row})
            self.parts.append(pa.Table.from_pylist(records, schema=_schema()), e, m, index)
        return list(range(start, start + len(records)))

    def write_trajectories(self, paths: dict[int, torch.Tensor]) -> None:
        """Solutions' paths (`fit --trajectory-every`), one tensor per solution id, as a part
        RUN/trajectories/from-FIRST_ID.safetensors written once with its group (atomic)."""
        if not paths:
            return
        folder = self.path / TRAJECTORIES
        folder.mkdir(exist_ok=True)
        tensors = {f"solution_{i}": t.detach().float().cpu().contiguous() for i, t in paths.items()}
        atomic_write(folder / f"from-{min(paths):09d}.safetensors",
                     lambda tmp: save_file(tensors, str(tmp), metadata={"layout": TRAJECTORY_LAYOUT}))

    def trajectories(self) -> dict[int, torch.Tensor]:
        """Every stored path by solution id (empty when the run kept none)."""
        folder = self.path / TRAJECTORIES
        out: dict[int, torch.Tensor] = {}
        for part in sorted(folder.glob("from-*.safetensors")) if folder.exists() else ():
            def parse(p: pathlib.Path) -> dict[int, torch.Tensor]:
                with safe_open(str(p), framework="pt") as f:
                    return {int(k.removeprefix("solution_")): f.get_tensor(k) for k in f.keys()}
            out.update(_read(part, parse))
        return out

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
