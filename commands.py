"""What each command line verb does: wire parsed arguments to the library and print results.

Kept apart from cli.py so the parser stays readable; nothing here computes science either.
"""

from __future__ import annotations

import sys

from .geometry.errors import ProtoscopeError
from .progress import Progress


def _init(args) -> tuple[str | None, str]:
    """--init splits in two: the recipe's init (normal | embedding) or an encoder start."""
    init = getattr(args, "init", None)
    if init and init.partition(":")[0] == "encoder":
        return None, init
    return init, ""


def _recipe(args):
    from .geometry.recipes import resolve_recipe

    return resolve_recipe(
        args.recipe, max_steps=args.max_steps, lr=args.lr, patience=args.patience,
        max_restarts=args.max_restarts, init_scale=args.init_scale, weight_decay=args.weight_decay,
        stop_accuracy=args.stop_accuracy, init=_init(args)[0], optimizer=args.optimizer,
        schedule=args.schedule, share_policy=args.share_policy,
        group_patience=args.group_patience, curriculum=getattr(args, "curriculum", None))


def _config(args, **fields):
    from .geometry.runs import DEFAULT_ARRANGEMENT, RunConfig

    return RunConfig(model=args.model, texts=args.texts, seeds=args.seeds,
                     arrangement=args.arrangement or DEFAULT_ARRANGEMENT, share=args.share,
                     group_size=args.group_size, recipe=_recipe(args), text_seed=args.text_seed,
                     generate_tokens=args.generate_tokens,
                     dtype=args.dtype, m_from=getattr(args, "m_from", None) or "",
                     start=_init(args)[1], **_spread(args), **fields)


def _spread(args) -> dict:
    spread = getattr(args, "init_spread", None)
    if spread is None:
        return {}
    if not _init(args)[1]:
        raise ProtoscopeError("--init-spread applies to encoder starts: give --init encoder or encoder:ENC")
    return {"start_spread": spread}


def _check_positive(**values) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise ProtoscopeError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def fit(args) -> int:
    _check_positive(length=args.length, seeds=args.seeds, batch_size=args.batch_size,
                    checkpoint_steps=args.checkpoint_steps)
    start = _init(args)[1]
    if start.partition(":")[2]:  # a missing or damaged encoder fails before the model loads
        from .geometry.encoder import load_encoder

        load_encoder(start.partition(":")[2])
    _fit_run(args, _config(args, lengths=(args.length,)))
    return 0


def experiment(args) -> int:
    raise ProtoscopeError("`experiment uniqueness` is now `protoscope study uniqueness --contexts C "
                          "--per-context K --seeds S --length N --out RUN` (m shared, the paper's "
                          "protocol)")


def study(args) -> int:
    from . import studies

    common = studies.Common(
        out=args.out, model=args.model, device=args.device, dtype=args.dtype,
        max_steps=args.max_steps, group_patience=args.group_patience, batch_size=args.batch_size,
        text_seed=args.text_seed, overwrite=args.overwrite, quiet=args.quiet)
    _check_positive(max_steps=args.max_steps, group_patience=args.group_patience,
                    batch_size=args.batch_size)
    _threads(args)
    sizes = {"connectivity": lambda: dict(
                 texts=args.texts, length=args.length, seeds=args.seeds, pairs=args.pairs or None,
                 bezier_steps=args.bezier_steps, samples_per_step=args.samples_per_step,
                 grid=args.grid, cross_text_pairs=args.cross_text_pairs),
             "uniqueness": lambda: dict(contexts=args.contexts, per_context=args.per_context,
                                        seeds=args.seeds, length=args.length),
             "probes": lambda: dict(texts=args.texts, length=args.length, seeds=args.seeds,
                                    group_size=args.group_size),
             "capacity": lambda: dict(texts=args.texts, lengths=args.lengths, seeds=args.seeds,
                                      share=args.share, method=args.method)}[args.study]()
    result = studies.run(args.study, common, **sizes)
    _print_study(result)
    return 0


def _print_study(result) -> None:
    import pandas as pd

    protocol = result.store.manifest.get("protocol", {})
    print(f"study {protocol.get('name')}: {result.store.path}")
    for sentence in protocol.get("differs", []):
        print(f"  differs from the paper: {sentence}")
    if len(result.summary):
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            print(result.summary.to_string(index=False))
    print_findings(result.store)
    print("seconds: " + ", ".join(f"{k.removeprefix('analysis:')} {v:.0f}"
                                  for k, v in result.seconds.items() if v is not None))
    print(f"report: {result.report}")


def _fit_run(args, config):
    """Fit (or resume) every problem of a run and print its summary."""
    from .geometry.runs import fit_run

    _threads(args)
    bar = Progress(quiet=args.quiet, every=args.progress_seconds)
    try:
        store = fit_run(args.out, config, device=args.device, overwrite=args.overwrite,
                        batch_size=args.batch_size,
                        checkpoint_every=(args.checkpoint_steps, args.checkpoint_seconds),
                        **bar.callbacks()).store
    finally:
        bar.close()
    _print_fit_summary(store.solutions(), args.out)
    return store


def encoder(args) -> int:
    if args.action == "universal-m":
        return _universal_m(args)
    from .geometry.encoder import KINDS, train_encoder
    from .geometry.models import load_model
    from .geometry.store import RunStore

    if args.kind not in KINDS:
        raise ProtoscopeError(f"--kind must be one of {', '.join(KINDS)}, got {args.kind!r}")
    options, lengths = None, ()
    if args.kind == "end-to-end":  # bad options fail before the model loads
        from .geometry.end_to_end import Options

        given = {k: getattr(args, k) for k in ("epochs", "lr", "weight_decay", "batch_size",
                                               "holdout", "patience", "regression", "unroll")}
        options = Options(**{k: v for k, v in given.items() if v is not None})
        lengths = _lengths(args.lengths) if args.lengths else ()
    elif args.start_from or args.lengths or args.resume:
        raise ProtoscopeError(f"--from, --lengths and --resume train the end-to-end kind only, not {args.kind}")
    if args.texts and args.kind != "end-to-end":
        raise ProtoscopeError(f"--texts trains the end-to-end kind only, not {args.kind}")
    if args.run is None and not args.start_from:
        raise ProtoscopeError("encoder train needs RUN (its solutions), or --kind end-to-end --from ENC --texts SPEC")
    if args.run is None and not args.texts:
        raise ProtoscopeError("without RUN, --texts names the training texts")
    if args.texts:
        from .geometry.runs import check_text_spec

        check_text_spec(args.texts)
    from .geometry.encoder import check_model, load_encoder, shipped_encoder

    shipped = args.start_from == "shipped"
    base = load_encoder(args.start_from) if args.start_from and not shipped else None
    store = RunStore.open(args.run) if args.run else None
    _threads(args)
    if store is not None:
        model = store.manifest.get("config", {}).get("model") or store.manifest.get("model", {}).get("name")
        dtype = store.manifest.get("dtype", "float32")
    else:
        from .geometry.models import DEFAULT_MODEL

        model, dtype = base.model["name"] if base else DEFAULT_MODEL, "float32"
    loaded = load_model(model, device=args.device, dtype=dtype)
    if args.start_from:  # the shipped one is picked by the model; any is checked against it
        base = shipped_encoder(loaded) if shipped else base
        check_model(base, loaded)
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    extra = []
    if args.texts:
        from .geometry.runs import RunConfig, load_text_mix

        extra = load_text_mix(RunConfig(model=loaded.info.name, texts=args.texts,
                                        text_seed=args.text_seed,
                                        generate_tokens=args.generate_tokens), loaded)
    checkpoint = None
    if args.kind == "end-to-end":
        from .geometry.end_to_end import checkpoint_path

        checkpoint = checkpoint_path(args.out)
    enc = train_encoder(store, loaded, kind=args.kind, seed=args.seed, options=options, log=log,
                        extra_texts=extra, extra_spec=args.texts or "", base=base,
                        lengths=lengths, checkpoint=checkpoint, resume=args.resume,
                        extra_about={"text_seed": args.text_seed,
                                     "generate_tokens": args.generate_tokens} if args.texts else None)
    path = enc.save(args.out)
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)  # the encoder's JSON holds the whole history
        from .reports.figures_encoder import write_training_page

        write_training_page(enc.meta, path.with_suffix(".html"))
    t = enc.meta["trained_on"]
    source = (f"{t['solutions']} solutions of {t['texts']} texts in {args.run}" if store is not None
              else f"the texts {args.texts}, from {args.start_from}")
    print(f"{args.kind} encoder from {source} ({loaded.info.name}): {path}")
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
    from .geometry.universal import UniversalConfig, train_to_file

    config = UniversalConfig(length=args.length, arrangement=args.arrangement, epochs=args.epochs,
                             batch_texts=args.batch_texts, e_steps=args.e_steps, lr=args.lr,
                             lr_m=args.lr_m, patience=args.patience, seed=args.seed)
    _threads(args)

    def on_epoch(r: dict) -> None:
        if not args.quiet:
            print(f"protoscope: universal m: epoch {r['epoch']}/{args.epochs}: share exact "
                  f"{r['share_exact']:.3f}, mean accuracy {r['mean_accuracy']:.3f}, {r['steps']} steps, "
                  f"{r['seconds']:.0f} s", file=sys.stderr, flush=True)

    result, trained = train_to_file(args.out, config, model=args.model, texts_spec=args.texts,
                                    text_seed=args.text_seed, device=args.device, dtype=args.dtype,
                                    overwrite=args.overwrite, on_epoch=on_epoch)
    meta = result.meta
    print(f"universal m {'trained' if trained else 'already trained'}: {args.out} "
          f"({meta['model']['name']}, {meta['n_texts']} texts at {meta['length']} tokens, "
          f"{meta['epochs']} epochs, {meta['steps']} steps; kept epoch {meta['best_epoch']}: "
          f"share exact {meta['share_exact']:.3f}, mean accuracy {meta['mean_accuracy']:.3f}; "
          f"stopped: {meta['stopped']})")
    print(f"use it: protoscope fit ... --m-from {args.out}")
    return 0


def capacity(args) -> int:
    from .geometry.capacity import capacity_per_text, capacity_search, length_grid
    from .geometry.runs import prepare_run, record_threads
    from .geometry.tables import reconstructed

    _check_positive(seeds=args.seeds, batch_size=args.batch_size)
    methods = {"one-step": ("one-step",), "mem": ("mem",), "both": ("one-step", "mem")}.get(args.method)
    if methods is None:
        raise ProtoscopeError(f"--method must be one-step, mem or both, got {args.method!r}")
    lengths = args.lengths or tuple(length_grid(256))
    if not lengths or min(lengths) < 1 or list(lengths) != sorted(set(lengths)):
        raise ProtoscopeError(f"--lengths must be increasing positive integers, got {list(lengths)}")
    config = _config(args, lengths=tuple(lengths), kind="capacity", methods=methods,
                     warm_start=not args.no_warm_start)
    _threads(args)
    with _locked(args.out):
        bar = Progress(None, args.quiet, desc="capacity")
        store, loaded, texts = prepare_run(args.out, config, device=args.device, overwrite=args.overwrite,
                                           on_texts=bar.on_texts)

        def on_length(method, length, rows):
            ok = sum(bool(reconstructed(acc)) for acc in rows.values())
            bar.bar.write(f"{method:>8} length {length:>4}: {ok}/{len(rows)} reconstructed")

        try:
            table = capacity_search(store, loaded, texts, config, batch_size=args.batch_size,
                                    progress=bar.on_group, on_length=on_length,
                                    on_texts=bar.on_texts)
        finally:
            bar.close()
        record_threads(store, "capacity")
        from .analysis.run import record_capacity

        record_capacity(store, table)
    print(capacity_per_text(table).to_string(index=False))
    print(f"capacity table: {store.path / 'analysis' / 'capacity.parquet'}")
    return 0


def analyze(args) -> int:
    from .analysis.options import from_args
    from .analysis.run import run_analyses
    from .geometry.runs import record_threads
    from .geometry.store import RunStore

    store = RunStore.open(args.run)
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    _threads(args)
    with _locked(args.run):
        # the findings run_analyses rebuilds, and later reports, follow this choice
        store.update_manifest(allow_learned_starts=bool(args.allow_learned_starts))
        timings = run_analyses(store, only=only, device=args.device, force=args.force,
                               quiet=args.quiet, options=from_args(args))
        record_threads(store, "analyze")
    for name, seconds in timings.items():
        print(f"{name:>15}: {'up to date' if seconds is None else f'{seconds:.1f} s'}")
    print_findings(store)
    print(f"tables: {store.path / 'analysis'}")
    return 0


def print_findings(store) -> None:
    """The findings table, as the run's answer comes first."""
    from .analysis.findings import as_text as findings_text

    table = store.analysis("findings")
    if table is None or table.empty:
        print("findings: none (no table answers a question yet)")
        return
    print(findings_text(table))


def report(args) -> int:
    from .reports.report import build_report
    from .reports.sweep_report import build_sweep_report, is_sweep

    if is_sweep(args.run):  # a sweep directory: its own page, linking every job's report
        print(f"report: {build_sweep_report(args.run)}")
        return 0
    path = build_report(args.run, static=args.static,
                        allow_learned_starts=True if args.allow_learned_starts else None)
    print(f"report: {path}")
    return 0


def compact(args) -> int:
    from .geometry.store import RunStore

    store = RunStore.open(args.run)
    folded = store.compact()
    rows = len(store.solutions())
    print(f"compact: {store.path}: {rows} solutions in solutions.parquet / .safetensors"
          + ("" if folded else " (already compact)"))
    return 0


def compare(args) -> int:
    from .reports.compare import build_compare

    path = build_compare(args.run, args.text)
    print(f"compare page: {path}")
    return 0


def demo(args) -> int:
    from .demo import run_demo

    _threads(args)
    run_demo(args.out, device=args.device, quiet=args.quiet)
    return 0


def _threads(args) -> None:
    """--threads, applied before any model loads (absent: torch's default)."""
    from .geometry.runs import use_threads

    use_threads(getattr(args, "threads", None))


def _locked(path):
    from .geometry.store import RunStore

    return RunStore(path).lock()


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
    import sys

    from .sweep import read_sweep_file, run_sweep

    _check_positive(workers=args.workers)
    if args.progress_seconds < 0:
        raise ProtoscopeError(f"--progress-seconds must be >= 0, got {args.progress_seconds:g}")
    if args.address and args.backend != "ray":
        raise ProtoscopeError("--address needs --backend ray")
    spec = read_sweep_file(args.file)
    state = run_sweep(spec, args.out, backend=args.backend, address=args.address,
                      workers=args.workers, device=args.device, source=str(args.file),
                      progress_seconds=args.progress_seconds)
    failed = [j["id"] for j in state["jobs"] if j["status"] != "done"]
    print(f"sweep: {len(state['jobs']) - len(failed)}/{len(state['jobs'])} jobs done; "
          f"results: {args.out}/results.parquet")
    if failed:
        print(f"protoscope: {len(failed)} jobs failed (see {args.out}/sweep.json); run the same "
              f"command to retry them", file=sys.stderr)
        return 1
    return 0
