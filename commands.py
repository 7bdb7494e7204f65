"""What each command line verb does: call the pipeline (workflows/pipeline.py) and print.

Kept apart from cli.py so the parser stays readable; nothing here computes science, and no
step is written here that the Python API does not run the same way.
"""

from __future__ import annotations

import sys

import pandas as pd

from .analysis.findings import as_text as findings_text
from .analysis.registry import ANALYSES, flag_dest
from .geometry.errors import ProtoscopeError
from .geometry.starts.end_to_end import Options
from .geometry.starts.universal import UniversalConfig
from .geometry.tables import capacity_per_text
from .options import given, resolve
from .workflows import pipeline, settings, studies
from .workflows.sweep import sweep as run_sweep_file


def _analysis_options(args, names) -> dict:
    """The analysis options typed on a command line: {analysis: {keyword: value}}."""
    out = {}
    for name in names:
        chosen = given(args, ANALYSES[name].options, flag_dest(name))
        if chosen:
            out[name] = chosen
    return out


def fit(args) -> int:
    run = pipeline.fit(args.out, args.length, **given(args, settings.FIT))
    _print_fit_summary(run.solutions, args.out)
    return 0


def capacity(args) -> int:
    run = pipeline.capacity(args.out, **given(args, settings.CAPACITY))
    print(capacity_per_text(run.table("capacity")).to_string(index=False))
    print(f"capacity table: {run.path / 'analysis' / 'capacity.parquet'}")
    return 0


def experiment(args) -> int:
    raise ProtoscopeError("`experiment uniqueness` is now `protoscope study uniqueness --contexts C "
                          "--per-context K --seeds S --length N --out RUN` (m shared, the paper's "
                          "protocol)")


def study(args) -> int:
    name = args.study
    spec = studies.STUDIES[name]
    result = studies.run(name, args.out, options=_analysis_options(args, spec.analyses),
                         **given(args, spec.every_option))
    _print_study(result)
    return 0


def demo(args) -> int:
    args.study = "demo"
    return study(args)


def _print_study(result) -> None:
    protocol = result.store.manifest.get("protocol", {})
    print(f"study {protocol.get('name')}: {result.store.path}")
    for sentence in protocol.get("differs", []):
        print(f"  differs from the paper: {sentence}")
    if len(result.summary):
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            print(result.summary.to_string(index=False))
    print_findings(result.store)
    rows = result.store.solutions()
    print(f"{len(rows)} solutions, {int(rows['converged'].sum())} converged")
    print("seconds: " + ", ".join(f"{k.removeprefix('analysis:')} {v:.0f}"
                                  for k, v in result.seconds.items() if v is not None))
    for page, path in result.pages.items():
        print(f"{page}: {path}")


def analyze(args) -> int:
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    timings = pipeline.analyze(args.run, only, options=_analysis_options(args, ANALYSES),
                               force=args.force, device=args.device, threads=args.threads,
                               quiet=args.quiet, allow_learned_starts=bool(args.allow_learned_starts),
                               log_dir=args.log_dir)
    for name, seconds in timings.items():
        print(f"{name:>15}: {'up to date' if seconds is None else f'{seconds:.1f} s'}")
    run = pipeline.open_run(args.run)
    print_findings(run.store)
    print(f"tables: {run.path / 'analysis'}")
    return 0


def print_findings(store) -> None:
    """The findings table, as the run's answer comes first."""
    table = store.analysis("findings")
    if table is None or table.empty:
        print("findings: none (no table answers a question yet)")
        return
    print(findings_text(table))


def report(args) -> int:
    path = pipeline.report(args.run, static=args.static,
                           allow_learned_starts=True if args.allow_learned_starts else None)
    print(f"report: {path}")
    return 0


def compact(args) -> int:
    store = pipeline.open_run(args.run).store
    folded = store.compact()
    rows = len(store.solutions())
    print(f"compact: {store.path}: {rows} solutions in solutions.parquet / .safetensors"
          + ("" if folded else " (already compact)"))
    return 0


def compare(args) -> int:
    print(f"compare page: {pipeline.compare(args.run, args.text)}")
    return 0


def options(args) -> int:
    print(pipeline.options_text(args.what))
    return 0


def encoder(args) -> int:
    if args.action == "universal-m":
        return _universal_m(args)
    options, lengths = None, ()
    if args.kind == "end-to-end":  # bad options fail before the model loads
        chosen = {k: getattr(args, k) for k in ("epochs", "lr", "weight_decay", "batch_size",
                                                "holdout", "patience", "regression", "unroll")}
        options = Options(**{k: v for k, v in chosen.items() if v is not None})
    lengths = _lengths(args.lengths) if args.lengths else ()  # other kinds refuse them (pipeline)
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    enc = pipeline.train_encoder(args.out, args.run, kind=args.kind, seed=args.seed,
                                 options=options, texts=args.texts, text_seed=args.text_seed,
                                 generate_tokens=args.generate_tokens, start_from=args.start_from,
                                 lengths=lengths, resume=args.resume, device=args.device,
                                 threads=args.threads, log=log)
    t = enc.meta["trained_on"]
    source = (f"{t['solutions']} solutions of {t['texts']} texts in {args.run}" if args.run
              else f"the texts {args.texts}, from {args.start_from}")
    print(f"{args.kind} encoder from {source} ({enc.model['name']}): {enc.path.with_suffix('.json')}")
    if args.kind == "end-to-end":
        print(_end_to_end_summary(enc.meta))
    return 0


def _lengths(spec: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in spec.split(","))
    except ValueError:
        raise ProtoscopeError(f"--lengths must be comma-separated token counts, got {spec!r}") from None
    if not values or min(values) < 1:
        raise ProtoscopeError(f"--lengths must be positive token counts, got {spec!r}")
    return tuple(sorted(set(values)))


def _end_to_end_summary(meta: dict) -> str:
    """Zero-step accuracy (no optimiser step) of the mlp start and of the kept encoder."""
    run = meta["end_to_end"]

    def acc(x) -> str:
        return "-" if x is None else f"{x:.3f}"

    name = "mlp start" if "mlp_start" in run else "start"
    start, kept = run.get("mlp_start") or run["start"], run["kept"]
    return (f"zero-step accuracy of decoder(encoder(text)): training texts {acc(kept['train']['accuracy'])} "
            f"({name} {acc(start['train']['accuracy'])}), held-out slice of "
            f"{len(run['held_out_texts'])} texts {acc(kept['held_out']['accuracy'])} ({name} "
            f"{acc(start['held_out']['accuracy'])}); kept epoch {run['kept_epoch']} of "
            f"{run['epochs_run']}" + (" (no epoch lowered the held-out loss: the mlp start)"
                                      if run["kept_epoch"] == 0 else "") + f", {run['seconds']} s")


def _universal_m(args) -> int:
    config = UniversalConfig(length=args.length, arrangement=args.arrangement, epochs=args.epochs,
                             batch_texts=args.batch_texts, e_steps=args.e_steps, lr=args.lr,
                             lr_m=args.lr_m, patience=args.patience, seed=args.seed)

    def on_epoch(r: dict) -> None:
        if not args.quiet:
            print(f"protoscope: universal m: epoch {r['epoch']}/{args.epochs}: share exact "
                  f"{r['share_exact']:.3f}, mean accuracy {r['mean_accuracy']:.3f}, {r['steps']} steps, "
                  f"{r['seconds']:.0f} s", file=sys.stderr, flush=True)

    result, trained = pipeline.train_universal_m(
        args.out, config, texts_spec=args.texts, text_seed=args.text_seed,
        overwrite=args.overwrite, on_epoch=on_epoch,
        **resolve(settings.MODEL, given(args, settings.MODEL), "encoder universal-m"))
    meta = result.meta
    print(f"universal m {'trained' if trained else 'already trained'}: {args.out} "
          f"({meta['model']['name']}, {meta['n_texts']} texts at {meta['length']} tokens, "
          f"{meta['epochs']} epochs, {meta['steps']} steps; kept epoch {meta['best_epoch']}: "
          f"share exact {meta['share_exact']:.3f}, mean accuracy {meta['mean_accuracy']:.3f}; "
          f"stopped: {meta['stopped']})")
    print(f"use it: protoscope fit ... --m-from {args.out}")
    return 0


def _print_fit_summary(rows, out) -> None:
    if not len(rows):
        print(f"no solutions in {out}")
        return
    ok = rows["converged"]
    print(f"{len(rows)} solutions in {out}: {int(ok.sum())} converged, "
          f"mean accuracy {rows['accuracy'].mean():.3f}, median steps {int(rows['steps'].median())}, "
          f"median seconds {rows['seconds'].median():.1f}")
    cols = ["solution_id", "text_id", "seed", "length", "accuracy", "steps", "restarts", "status"]
    print(rows[cols].to_string(index=False))


def sweep(args) -> int:
    state = run_sweep_file(args.file, args.out, backend=args.backend, address=args.address,
                           workers=args.workers, device=args.device,
                           progress_seconds=args.progress_seconds)
    failed = [j["id"] for j in state["jobs"] if j["status"] != "done"]
    print(f"sweep: {len(state['jobs']) - len(failed)}/{len(state['jobs'])} jobs done; "
          f"results: {args.out}/results.parquet")
    if failed:
        print(f"protoscope: {len(failed)} jobs failed (see {args.out}/sweep.json); run the same "
              f"command to retry them", file=sys.stderr)
        return 1
    return 0
