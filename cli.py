"""The protoscope command line: parse, call the library, print. No science in here.

Bad input ends with one line on stderr and exit status 2; an interrupted fit keeps every
finished solution and resumes when the same command runs again.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

if __package__ in (None, ""):  # `python cli.py ...` runs the installed package's CLI
    from protoscope.cli import main as _main

    if __name__ == "__main__":
        sys.exit(_main())

from .analysis.registry import ANALYSES, DEFAULT, flag_dest  # noqa: E402
from .geometry.errors import ProtoscopeError  # noqa: E402
from .options import add_arguments  # noqa: E402
from .workflows import settings  # noqa: E402
from .workflows.protocols import STUDIES  # noqa: E402

EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        raise ProtoscopeError(f"{self.prog}: {message} (see --help)")


def _threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's); kept in the manifest")


def _learned_starts_option(p: argparse.ArgumentParser, scope: str) -> None:
    p.add_argument("--allow-learned-starts", action="store_true",
                   help="ordinary verdicts for uniqueness, connectivity and probe findings even "
                        "when solutions started from a learned encoder (otherwise inconclusive: "
                        f"such seeds start near one point); {scope}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="protoscope", description="Fit and analyse proto-token solutions of a frozen causal LM.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    fit = sub.add_parser("fit", help="fit solutions for texts at one length")
    fit.add_argument("--length", type=int, required=True, help="target prefix length N in tokens")
    fit.add_argument("--out", required=True, help="run directory (created, or resumed if it exists)")
    add_arguments(fit, settings.FIT)

    cap = sub.add_parser("capacity", help="longest prefix reconstructed, over a grid of lengths")
    cap.add_argument("--out", required=True, help="run directory (created, or resumed if it exists)")
    add_arguments(cap, settings.CAPACITY)

    exp = sub.add_parser("experiment", help="replaced by `protoscope study uniqueness`")
    exp.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    _study_parsers(sub)

    _encoder_parsers(sub)

    ana = sub.add_parser("analyze", help="run the analyses on a run directory")
    ana.add_argument("run")
    ana.add_argument("--only", default=None, help=f"comma-separated, of: {','.join(ANALYSES)} (default: "
                     f"{','.join(DEFAULT)}; the others are asked for by name)")
    ana.add_argument("--force", action="store_true", help="recompute tables that are up to date")
    ana.add_argument("--device", default="cpu")
    _threads_option(ana)
    ana.add_argument("--quiet", action="store_true")
    _learned_starts_option(ana, "record in the manifest (report follows it)")
    ana.add_argument("--log-dir", default=None, help="also write TensorBoard event files here: "
                     "each curve family's training loss and held share per step (the "
                     "tensorboard extra)")
    _analysis_arguments(ana, ANALYSES)

    rep = sub.add_parser("report", help="write RUN/report.html (or a sweep directory's DIR/report.html)")
    rep.add_argument("run")
    rep.add_argument("--static", default=None, help="also export every figure: png | svg | pdf")
    _learned_starts_option(rep, "for this page only (default: what analyze recorded)")

    cpt = sub.add_parser("compact", help="fold a run's appended parts into solutions.parquet / "
                                         ".safetensors (a fit does this when it ends)")
    cpt.add_argument("run")

    cmp_ = sub.add_parser("compare", help="write RUN/compare-TEXT.html for one text")
    cmp_.add_argument("run")
    cmp_.add_argument("--text", required=True, help="text id")

    swp = sub.add_parser("sweep", help="many models x texts x lengths x seeds from a TOML file")
    swp.add_argument("file", help="the sweep file (TOML): models, texts, lengths or capacity, seeds, ...")
    swp.add_argument("--out", required=True, help="sweep directory (created, or resumed if it exists)")
    swp.add_argument("--backend", default="local", help="local (default: jobs one by one here) | ray")
    swp.add_argument("--address", default=None, help="Ray cluster address (default: start a local one)")
    swp.add_argument("--workers", type=int, default=None, help="CPUs of a local Ray cluster (default: all)")
    swp.add_argument("--device", default=None, help="cpu | cuda (default: cuda where a worker has one)")
    swp.add_argument("--progress-seconds", type=float, default=60.0,
                     help="seconds between a running job's lines of its groups in flight (steps, "
                          "worst member's accuracy), each prefixed with the job's id (default 60)")

    demo = sub.add_parser("demo", help=STUDIES["demo"].help)
    _study_arguments(demo, STUDIES["demo"], out="runs/demo")

    opt = sub.add_parser("options", help="every option of a step, its default from its one declaration")
    opt.add_argument("what", help="fit | capacity | analyze | a study's name")
    return parser


def _encoder_parsers(sub) -> None:
    """`protoscope encoder train|universal-m`: learned starts for the fitting loop."""
    enc = sub.add_parser("encoder", help="learned starts: text -> proto-tokens, or one universal m")
    actions = enc.add_subparsers(dest="action", required=True, parser_class=_Parser)
    train = actions.add_parser("train", help="fit an encoder on RUN's solutions (end-to-end: or on "
                               "texts alone, from --from ENC)")
    train.add_argument("run", nargs="?", default=None, help="run directory whose converged solutions "
                       "are the training data (end-to-end with --from: optional)")
    train.add_argument("--out", required=True, help="ENC: writes ENC.safetensors and ENC.json")
    train.add_argument("--kind", default="ridge", help="nearest | ridge (default) | mlp | end-to-end "
                       "(the mlp fine-tuned through the frozen decoder on the run's texts)")
    train.add_argument("--seed", type=int, default=0, help="seed of the MLP's initialisation (and of "
                       "end-to-end's held-out split and batch order)")
    e2e = train.add_argument_group("end-to-end only")
    e2e.add_argument("--epochs", type=int, default=None, help="at most this many passes over the training texts (30)")
    e2e.add_argument("--lr", type=float, default=None, help="AdamW learning rate (1e-3)")
    e2e.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay of the weight matrices (1e-2)")
    e2e.add_argument("--batch-size", type=int, default=None, help="texts per decoder pass (16)")
    e2e.add_argument("--holdout", type=float, default=None, help="share of the run's texts held out "
                     "for early stopping (0.2; 0: none, the last epoch is kept)")
    e2e.add_argument("--patience", type=int, default=None, help="epochs without a lower held-out loss before stopping (5)")
    e2e.add_argument("--regression", type=float, default=None, help="weight of a cosine term to each "
                     "text's nearest solution (0: reconstruction only)")
    e2e.add_argument("--texts", default=None, metavar="SPEC", help="more training texts beside the "
                     "run's (a text SPEC as fit's --texts, e.g. windows:99+random:200): the "
                     "reconstruction loss needs no solution of them")
    e2e.add_argument("--text-seed", type=int, default=0, help="seed for --texts' random and generated texts")
    e2e.add_argument("--generate-tokens", type=int, default=128,
                     help="tokens per generated text of --texts (128)")
    e2e.add_argument("--from", dest="start_from", default=None, metavar="ENC",
                     help="start from this end-to-end encoder (`shipped`: the one fit --init "
                          "encoder uses) instead of an mlp fitted on RUN's solutions")
    e2e.add_argument("--lengths", default=None, metavar="N,N,...",
                     help="train each --texts text at one of these lengths (a seeded round robin), "
                          "e.g. 8,16,32,64: one length-conditioned encoder for all of them "
                          "(default: each of RUN's lengths)")
    e2e.add_argument("--unroll", type=int, default=None, metavar="K",
                     help="judge each prediction after K steps of the fit's own Adam from it "
                          "(first order; K extra decoder passes per batch; default 0: the "
                          "prediction itself)")
    e2e.add_argument("--resume", action="store_true", help="continue a training that stopped, from "
                     "the last epoch its checkpoint ENC.ckpt.pt holds")
    train.add_argument("--quiet", action="store_true", help="no per-epoch line (end-to-end)")
    train.add_argument("--device", default="cpu")
    _threads_option(train)

    uni = actions.add_parser("universal-m", help="train one m over many texts (for fit --m-from FILE)")
    uni.add_argument("--texts", required=True, help="text SPEC of the training texts (as fit's --texts)")
    uni.add_argument("--length", type=int, required=True, help="target prefix length N in tokens")
    uni.add_argument("--out", required=True,
                     help="FILE.safetensors: tensor 'm' and its metadata (and FILE.json); resumed "
                          "from FILE.checkpoint.safetensors when an earlier run was interrupted")
    uni.add_argument("--epochs", type=int, default=10, help="epochs at most (default 10)")
    uni.add_argument("--batch-texts", type=int, default=16, help="texts per minibatch (default 16)")
    uni.add_argument("--e-steps", type=int, default=8,
                     help="optimiser steps per minibatch visit (default 8)")
    uni.add_argument("--lr", type=float, default=0.05, help="Adam rate of each text's e (default 0.05)")
    uni.add_argument("--lr-m", type=float, default=0.01, help="Adam rate of m (default 0.01)")
    uni.add_argument("--patience", type=int, default=3,
                     help="stop after this many epochs without a higher share of texts exact (default 3)")
    uni.add_argument("--seed", type=int, default=0, help="seed of the starts and the minibatch order")
    uni.add_argument("--arrangement", default=settings.DEFAULT_ARRANGEMENT,
                     help=f"an arrangement with m (default {settings.DEFAULT_ARRANGEMENT!r})")
    uni.add_argument("--text-seed", type=int, default=0, help="seed for random and generated texts")
    uni.add_argument("--overwrite", action="store_true", help="retrain even if FILE exists")
    uni.add_argument("--quiet", action="store_true", help="no line per epoch on stderr")
    add_arguments(uni, settings.MODEL)


def _study_parsers(sub) -> None:
    """`protoscope study NAME`: the paper's protocols, each declared in workflows/protocols.py."""
    study = sub.add_parser("study", help="the paper's protocols: fit, analyse, report in one command")
    names = study.add_subparsers(dest="study", required=True, parser_class=_Parser)
    for name, spec in STUDIES.items():
        if name != "demo":  # `protoscope demo`
            _study_arguments(names.add_parser(name, help=spec.help), spec)


def _study_arguments(p, spec, out: str | None = None) -> None:
    """A study's flags: --out, its options, the model's, and its analyses' with the
    protocol's values as defaults (analyze's shown beside them)."""
    if out is None:
        p.add_argument("--out", required=True, help="run directory (created, or resumed if it exists)")
    else:
        p.add_argument("--out", default=out, help=f"run directory (default {out})")
    add_arguments(p, spec.every_option)
    _analysis_arguments(p, spec.analyses, spec.overrides)


def _analysis_arguments(p, names, overrides: dict | None = None) -> None:
    for name in names:
        add_arguments(p, ANALYSES[name].options, (overrides or {}).get(name),
                      title=f"{name}: {ANALYSES[name].question}", dest=flag_dest(name),
                      note="analyze's")


def _quiet_libraries() -> None:
    """Keep library chatter off stderr, where a failed command must leave exactly one line.

    Transformers draws a "Loading weights" bar for every model load and warns when a text is
    longer than the tokenizer's nominal maximum (protoscope checks lengths against the model's
    context itself and says so in one line). Our own fit progress bar is unaffected; --debug
    keeps everything.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers loads
    logging.getLogger("transformers.tokenization_utils_base").setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # already imported (main() called in-process)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        args = build_parser().parse_args(argv)
        if not args.debug:
            _quiet_libraries()
        from . import commands

        return getattr(commands, args.command)(args) or 0
    except ProtoscopeError as err:
        if args is not None and args.debug:
            raise
        print(f"protoscope: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        out = getattr(args, "out", None) or getattr(args, "run", None)
        where = f" in {out}" if out else ""
        print(f"protoscope: interrupted; finished solutions are kept{where}: run the same command to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
