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

from .analysis import options as analysis_options  # noqa: E402
from .geometry.errors import ProtoscopeError  # noqa: E402

EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        raise ProtoscopeError(f"{self.prog}: {message} (see --help)")


def _ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="alias, local folder or hub id (default: smollm2-135m)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, mps")
    p.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16")
    _threads_option(p)


def _threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's); kept in the manifest")


def _learned_starts_option(p: argparse.ArgumentParser, scope: str) -> None:
    p.add_argument("--allow-learned-starts", action="store_true",
                   help="ordinary verdicts for uniqueness, connectivity and probe findings even "
                        "when solutions started from a learned encoder (otherwise inconclusive: "
                        f"such seeds start near one point); {scope}")


def _fit_options(p: argparse.ArgumentParser, texts: bool = True) -> None:
    if texts:
        p.add_argument("--texts", default="builtin",
                       help="builtin | windows:COUNT | random:COUNT | generated:CONTEXTS:PER_CONTEXT | FILE.txt | "
                            "FILE.jsonl; join several with '+'")
    p.add_argument("--seeds", type=int, default=2, help="solutions per text (default 2)")
    p.add_argument("--out", required=True, help="run directory (created, or resumed if it exists)")
    _model_options(p)
    p.add_argument("--arrangement", default=None, help="e.g. 'bos e m*' (default), 'e m*', 'e m*+1', 'e*', '(e m)*', 'mem'")
    p.add_argument("--share", default="none", help="none (default) | m | e: which vector a group of texts shares")
    p.add_argument("--group-size", type=int, default=0, help="texts per share group (default: all)")
    p.add_argument("--recipe", default="default", help="default | paper")
    for name, kind in (("max-steps", int), ("lr", float), ("patience", int), ("max-restarts", int),
                       ("init-scale", float), ("weight-decay", float), ("stop-accuracy", float)):
        p.add_argument(f"--{name}", type=kind, default=None, help=f"override the recipe's {name.replace('-', '_')}")
    p.add_argument("--init", default=None,
                   help="normal | embedding: override the recipe's init; encoder (the one shipped "
                        "for the model) | encoder:ENC (one trained with `encoder train`): start "
                        "each problem from the encoder's prediction (restarts use the recipe's init)")
    p.add_argument("--init-spread", type=float, default=None, metavar="S",
                   help="with --init encoder: seed s > 0 starts at the prediction plus seeded noise of "
                        "S x its norm (default 0.05; 0: every seed at the prediction). Larger S: "
                        "seeds end further apart, at more steps (bench/results/starts_spread.json)")
    p.add_argument("--optimizer", default=None, help="adam | adamw: override the recipe's optimizer")
    p.add_argument("--schedule", default=None, help="constant | cosine: override the recipe's schedule")
    p.add_argument("--share-policy", default=None,
                   help="release | wait: does a share group stop, keeping its exact members, once "
                        "its best stops improving (release), or wait for every member?")
    p.add_argument("--curriculum", action="store_const", const=True, default=None,
                   help="length curriculum: fit N/4, then N/2, then N tokens, each warm-started "
                        "from the last (steps count every stage)")
    p.add_argument("--group-patience", type=int, default=None,
                   help="override the recipe's group_patience (steps without a better group best "
                        "before a release)")
    p.add_argument("--batch-size", type=int, default=None, help="problems per batch (default: by length)")
    p.add_argument("--m-from", default=None, metavar="RUN_OR_FILE",
                   help="keep this m frozen and fit e only: a run whose solutions share one m, or "
                        "a .safetensors file with a tensor 'm'")
    p.add_argument("--text-seed", type=int, default=0, help="seed for random and generated texts")
    p.add_argument("--generate-tokens", type=int, default=128, help="tokens per generated text (default 128)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar; one line of the groups in flight every --progress-seconds")
    p.add_argument("--progress-seconds", type=float, default=60.0,
                   help="under --quiet, seconds between progress lines (default 60)")
    p.add_argument("--checkpoint-steps", type=int, default=50,
                   help="checkpoint the groups in flight every this many steps (default 50) ...")
    p.add_argument("--checkpoint-seconds", type=float, default=60.0,
                   help="... or every this many seconds, whichever comes first (default 60)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="protoscope", description="Fit and analyse proto-token solutions of a frozen causal LM.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    fit = sub.add_parser("fit", help="fit solutions for texts at one length")
    fit.add_argument("--length", type=int, required=True, help="target prefix length N in tokens")
    _fit_options(fit)

    cap = sub.add_parser("capacity", help="longest prefix reconstructed, over a grid of lengths")
    cap.add_argument("--lengths", type=_ints, default=None, help="comma-separated grid (default: the paper's sqrt-2 grid up to 256)")
    cap.add_argument("--method", default="one-step", help="one-step (default) | mem | both")
    cap.add_argument("--no-warm-start", action="store_true", help="start every length from a fresh init")
    _fit_options(cap)

    exp = sub.add_parser("experiment", help="replaced by `protoscope study uniqueness`")
    exp.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    _study_parsers(sub)

    _encoder_parsers(sub)

    ana = sub.add_parser("analyze", help="run the analyses on a run directory")
    ana.add_argument("run")
    ana.add_argument("--only", default=None, help="comma-separated: uniqueness,connectivity,neighbourhoods,information")
    ana.add_argument("--force", action="store_true", help="recompute tables that are up to date")
    ana.add_argument("--device", default="cpu")
    _threads_option(ana)
    ana.add_argument("--quiet", action="store_true")
    _learned_starts_option(ana, "record in the manifest (report follows it)")
    analysis_options.add_arguments(ana)

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

    demo = sub.add_parser("demo", help="the main job on the default model, end to end")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--device", default="cpu")
    _threads_option(demo)
    demo.add_argument("--quiet", action="store_true")
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
    uni.add_argument("--arrangement", default="bos e m*", help="an arrangement with m (default 'bos e m*')")
    uni.add_argument("--text-seed", type=int, default=0, help="seed for random and generated texts")
    uni.add_argument("--overwrite", action="store_true", help="retrain even if FILE exists")
    uni.add_argument("--quiet", action="store_true", help="no line per epoch on stderr")
    _model_options(uni)


def _study_parsers(sub) -> None:
    """`protoscope study NAME`: the paper's protocols, each with its own sizes (studies.py)."""
    study = sub.add_parser("study", help="the paper's protocols: fit, analyse, report in one command")
    names = study.add_subparsers(dest="study", required=True, parser_class=_Parser)

    def common(p, length: int | None, seeds: int) -> None:
        p.add_argument("--out", required=True, help="run directory (created, or resumed if it exists)")
        if length is not None:
            p.add_argument("--length", type=int, default=length, help=f"tokens per text (default {length})")
        p.add_argument("--seeds", type=int, default=seeds, help=f"solutions per text (default {seeds})")
        _model_options(p)
        p.add_argument("--max-steps", type=int, default=None, help="fitting budget per problem (default: the study's, studies.STUDY_FIT, else the recipe's)")
        p.add_argument("--group-patience", type=int, default=None, help="steps a share group may go without a better snapshot (default: the study's, else the recipe's)")
        p.add_argument("--batch-size", type=int, default=None, help="problems per batch (default: by length)")
        p.add_argument("--text-seed", type=int, default=0, help="seed for random and generated texts")
        p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
        p.add_argument("--quiet", action="store_true", help="no progress")

    conn = names.add_parser("connectivity", help="paths between a text's solutions, m shared by its seeds (defaults: 467 s wall, 444 CPU-s at one thread, 2026-12-03)")
    conn.add_argument("--texts", default="windows:8", help="text SPEC (default windows:8: 6 gave 4 texts with both seeds exact, too few for an interval; the paper: 5 texts)")
    common(conn, length=12, seeds=2)
    conn.add_argument("--pairs", type=int, default=0, help="same-text pairs per text (default 0: all, as the paper)")
    conn.add_argument("--bezier-steps", type=int, default=None, help="curve training steps (default: analyze's, 100)")
    conn.add_argument("--samples-per-step", type=int, default=None, help="t samples per curve step (default: analyze's, 4)")
    conn.add_argument("--grid", type=int, default=21, help="grid points along each path (default 21; Garipov: 61)")
    conn.add_argument("--cross-text-pairs", type=int, default=2, help="different-text straight paths (default 2)")

    uniq = names.add_parser("uniqueness", help="C contexts x K continuations, one shared m (defaults: 40 solutions, 304 steps; 34 min wall beside four other jobs, 2026-12-03)")
    uniq.add_argument("--contexts", type=int, default=10, help="contexts C (default 10, at most 10; 5 or more for an interval)")
    uniq.add_argument("--per-context", type=int, default=2, help="continuations K per context (default 2)")
    common(uniq, length=8, seeds=3)

    prob = names.add_parser("probes", help="linear probes of e over many texts, m shared in groups (defaults: 737 s wall, 662 CPU-s at one thread, 2026-12-03)")
    prob.add_argument("--texts", default="generated:4:10+windows:20+random:20",
                      help="text SPEC (default: 80 texts, generated:4:10+windows:20+random:20; "
                           "the paper probes none, Bondarenko et al. 2,000)")
    prob.add_argument("--group-size", type=int, default=4, help="texts per shared m (default 4)")
    common(prob, length=8, seeds=1)

    cap = names.add_parser("capacity", help="the capacity search, m shared or not (defaults: 291 s wall, 249 CPU-s at one thread, 2026-12-03; every text reached 32, the grid's top)")
    cap.add_argument("--texts", default="builtin:5", help="text SPEC (default builtin:5)")
    cap.add_argument("--lengths", type=_ints, default=(4, 8, 16, 32),
                     help="comma-separated length grid (default 4,8,16,32; the paper's goes to 1448)")
    cap.add_argument("--share", default="none", help="none (default) | m")
    cap.add_argument("--method", default="one-step", help="one-step (default) | mem | both")
    common(cap, length=None, seeds=1)


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
