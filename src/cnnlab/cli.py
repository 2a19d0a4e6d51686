"""The `cnnlab` command: argparse subcommands that call library functions and nothing more.

Every bad input ends as one line on stderr and exit code 2 (argparse's own errors included); ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from typing import Union, get_args, get_origin

from cnnlab.errors import CnnlabError, Interrupted


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints the whole usage block by default)
        message = " ".join(message.split())  # an argument with a newline in it must not break the one line
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _field_type(annotation) -> type:
    """int for ``int | None``, float for ``float | None`` and so on (annotations are strings under PEP 563)."""
    if isinstance(annotation, str):
        annotation = annotation.replace(" | None", "")
        return {"int": int, "float": float, "str": str, "bool": bool}[annotation]
    if get_origin(annotation) in (Union, types.UnionType):
        return next(a for a in get_args(annotation) if a is not type(None))
    return annotation


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    from cnnlab.train.config import CHOICES, config_fields

    p.add_argument("model", nargs="?", help="model name (see `cnnlab models`); omit with --resume")
    for f in config_fields():
        if f.name == "model":
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = _field_type(f.type)
        help_text = f.metadata.get("help", "")
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            p.add_argument(flag, type=kind, default=None, choices=CHOICES.get(f.name), help=help_text)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from RUN_DIR/last.pt")
    p.add_argument("--force", action="store_true", help="write into an existing, non-empty run folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--no-report", action="store_true", help="skip report.html at the end")


def _cmd_train(args) -> int:
    from cnnlab.train import resume, train
    from cnnlab.train.config import config_fields

    overrides = {f.name: getattr(args, f.name) for f in config_fields() if f.name not in ("model", "recipe")}
    common = dict(quiet=args.quiet, report=not args.no_report)
    if args.resume:
        given = {k: v for k, v in overrides.items() if v is not None}
        if args.model or args.recipe or given:
            raise CnnlabError("--resume takes the run's own config; expected no model, recipe or other training flags")
        result = resume(args.resume, **common)
    else:
        if not args.model:
            raise CnnlabError("expected a model name (see `cnnlab models`) or --resume RUN_DIR, got neither")
        result = train(args.model, recipe=args.recipe or "book", force=args.force, **common, **overrides)
    return 0 if result is not None else 1


def _cmd_eval(args) -> int:
    from cnnlab.train.evaluate import evaluate_checkpoint, format_eval

    result = evaluate_checkpoint(args.checkpoint, data_dir=args.data_dir, device=args.device)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_eval(result))
    return 0


def _cmd_models(args) -> int:
    from cnnlab.models.summary import models_table

    print(models_table())
    return 0


def _cmd_datasets(args) -> int:
    from cnnlab.data import datasets_table

    print(datasets_table())
    return 0


def _parse_shape(text: str) -> tuple[int, int]:
    try:
        n, c, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise CnnlabError(f"--input must be N,C,H,W with four integers, e.g. 1,1,28,28; got {text!r}") from None
    if min(n, c, h, w) < 1 or h != w:
        raise CnnlabError(f"--input must be positive with a square image (H == W), got {text!r}")
    return c, h


def _cmd_summary(args) -> int:
    from cnnlab.models.summary import summarize

    in_channels, size = _parse_shape(args.input) if args.input else (1, None)
    print(summarize(args.model, input_size=size, in_channels=in_channels, ops=args.ops))
    return 0


def _cmd_kernel(args) -> int:
    from cnnlab.kernel_demo import run_kernel_demo

    run_kernel_demo(out=args.out)
    return 0


def _cmd_report(args) -> int:
    from cnnlab.report import write_report

    print(write_report(args.run_dir, data_dir=args.data_dir, device=args.device))
    return 0


def _cmd_predict(args) -> int:
    from cnnlab.predict import format_predictions, predict_files

    if args.top < 1:
        raise CnnlabError(f"--top must be a positive integer, got {args.top}")
    results = predict_files(args.checkpoint, args.images, invert=args.invert, topk=args.top, device=args.device)
    print(json.dumps(results, indent=2) if args.json else format_predictions(results))
    return 0


def _cmd_export(args) -> int:
    from cnnlab.export import export_checkpoint

    print(export_checkpoint(args.checkpoint, args.output, format=args.format, force=args.force))
    return 0


def _cmd_bench(args) -> int:
    from dataclasses import replace
    from pathlib import Path

    from cnnlab.bench import QUICK, Budget, format_table, run_benchmarks

    budget = QUICK if args.quick else Budget()
    given = {k: v for k, v in dict(epochs=args.epochs, repeats=args.repeats, p2_epochs=args.p2_epochs).items()
             if v is not None}
    for name, value in given.items():
        if value < 1:
            raise CnnlabError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    rows = run_benchmarks(replace(budget, **given), only=tuple(args.only), data_dir=args.data_dir,
                          d2l_python=args.d2l_python)
    if args.out:
        from cnnlab.train.rundir import write_json

        write_json(Path(args.out), rows)
    print(format_table(rows))
    return 0


def _cmd_explore(args) -> int:
    try:
        from cnnlab.explore import serve
    except ImportError as e:  # the web stack is an extra: `pip install cnnlab[explore]`
        raise CnnlabError(f"cnnlab explore needs the explore extra (pip install 'cnnlab[explore]'), missing "
                          f"{e.name}") from None
    try:
        serve(args.path, host=args.host, port=args.port, open_browser=not args.no_browser)
    except KeyboardInterrupt:  # Ctrl-C is how a server is stopped: not an error
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnlab", description="Train, inspect and ship the CNNs of d2l ch. 7-8 on Fashion-MNIST.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a model on Fashion-MNIST and write a run folder")
    _add_train_flags(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="test accuracy, per-class accuracy and confusion matrix of a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--data-dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("models", help="list the registered models")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("datasets", help="list the registered datasets (train on one with --dataset NAME)")
    p.set_defaults(func=_cmd_datasets)

    p = sub.add_parser("summary", help="per-layer output shapes, parameters and MACs of a model")
    p.add_argument("model")
    p.add_argument("--input", metavar="N,C,H,W", help="input shape (default: 1,1,S,S at the model's input size)")
    p.add_argument("--ops", default="torch", choices=("torch", "scratch"))
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("kernel", help="d2l 7.2.3-7.2.4: detect edges, then learn the edge kernel")
    p.add_argument("--out", help="save a figure of X, Y and the learned kernel here (PNG)")
    p.set_defaults(func=_cmd_kernel)

    p = sub.add_parser("report", help="write RUN_DIR/report.html")
    p.add_argument("run_dir")
    p.add_argument("--data-dir")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("predict", help="classify image files with a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+")
    p.add_argument("--invert", action="store_true",
                   help="for dark clothes on a light background (Fashion-MNIST is light on dark)")
    p.add_argument("--top", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("export", help="export a checkpoint for deployment (ONNX with preprocessing inside)")
    p.add_argument("checkpoint")
    p.add_argument("--format", default="onnx", choices=("onnx", "pt2"),
                   help="onnx (onnxruntime-verified) or pt2 (torch.export); TorchScript is deprecated in torch 2.14")
    p.add_argument("--output", required=True)
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("explore", help="a local web page to look inside trained runs (docs/explore.md)")
    p.add_argument("path", nargs="?", default="runs", help="a runs folder or one run folder (default: runs)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only; anything "
                   "else is reachable from the network and prints a warning)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free one; default 8765)")
    p.add_argument("--no-browser", action="store_true", help="print the address without opening a browser")
    p.set_defaults(func=_cmd_explore)

    from cnnlab.bench import GROUPS

    p = sub.add_parser("bench", help="measure speed, accuracy and memory figures (see docs/benchmarks.md)")
    p.add_argument("--quick", action="store_true", help="CI smoke budget: 1 epoch of 2 batches, one repeat")
    p.add_argument("--out", metavar="FILE.json", help="also write the result rows here as JSON")
    p.add_argument("--only", nargs="+", choices=GROUPS, default=list(GROUPS), help="figure groups to measure")
    p.add_argument("--epochs", type=int, help="LeNet epochs per program (default: the book's 10)")
    p.add_argument("--repeats", type=int, help="runs of each LeNet program; the figure is the median (default 3)")
    p.add_argument("--p2-epochs", type=int, help="epochs of the P2 runs (default: the fast recipe's)")
    p.add_argument("--data-dir", help="Fashion-MNIST folder (default: $CNNLAB_DATA, then the cache)")
    p.add_argument("--d2l-python", help="python of a d2l 1.0.3 virtualenv (default: ~/.cache/cnnlab/d2l-venv)")
    p.set_defaults(func=_cmd_bench)
    for command in sub.choices.values():  # `cnnlab train ... --debug` works as well as `cnnlab --debug train ...`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CnnlabError as e:
        if args.debug:
            raise
        print(f"cnnlab {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)  # one line, always
        return 2
    except Interrupted as e:  # the trainer already printed where the checkpoint is and how to resume
        return 128 + e.signum
    except BrokenPipeError:  # `cnnlab models | head`: the reader left; stop quietly as Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:  # Ctrl-C outside a training loop (eval, export, data loading)
        if args.debug:
            raise
        print(f"cnnlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, or the machine failing (out of memory, disk full): tracebacks need --debug
        if args.debug:
            raise
        print(f"cnnlab {args.command}: internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]} "
              f"(`cnnlab --debug {args.command} ...` shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
