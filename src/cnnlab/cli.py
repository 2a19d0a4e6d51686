"""The `cnnlab` command: argparse subcommands that call library functions and nothing more.

Every bad input ends as one line on stderr and exit code 2 (argparse's own errors included); ``--debug`` shows the
traceback instead. Each command imports its library module inside its function, so that it imports only what it
runs (building the flags from TrainConfig still imports torch: docs/design.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import IO, Any

from cnnlab import __version__
from cnnlab.checks import int_in_range, positive_int
from cnnlab.errors import CnnlabError, Interrupted, summary
from cnnlab.io import check_output_file, file_names_written, writable_json

DATA_DIR_HELP = "the dataset's folder (default: the run's); for a folder: dataset, where its images are now"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints the whole usage block by default)
        message = " ".join(message.split())  # an argument with a newline in it must not break the one line
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _CommandParser(_Parser):
    """A subcommand's parser: it refuses the arguments it does not know itself.

    argparse hands a subcommand's unknown arguments back to the top-level parser, whose error would begin "cnnlab:"
    where every other error of the subcommand begins "cnnlab train:"; nothing after the subcommand's name is the
    top-level parser's to read (its own flags come before it).
    """

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def _flag_type(convert: Callable[[str], Any], kind: str = "int") -> Callable[[str], Any]:
    """An argparse ``type=`` that runs ``convert`` (a parse, then a cnnlab.checks helper) on a flag's text.

    Text that does not parse (a plain ValueError) gets argparse's own "argument --top: invalid int value: 'x'", as
    every ``type=int`` flag does. A CnnlabError is raised on as an ``ArgumentError`` with no argument, so argparse
    prints its one line as it is ("--top must be a positive integer, got 0"); an ``ArgumentTypeError`` would put
    "argument --top: " before a message that names the flag already.
    """
    def parse(text: str) -> Any:
        try:
            return convert(text)
        except CnnlabError as e:
            raise argparse.ArgumentError(None, str(e)) from None

    parse.__name__ = kind  # the "int" of "invalid int value"
    return parse


def _count(flag: str) -> Callable[[str], int]:
    return lambda text: positive_int(int(text), flag)


def _port(text: str) -> int:
    return int_in_range(int(text), "--port", 0, 65536, expected="a TCP port from 0 to 65535")


def _input_size(text: str) -> int | tuple[int, int]:
    """``--input-size`` as a side (``224``) or ``HEIGHTxWIDTH`` (``256x128``)."""
    sides = text.lower().split("x")
    if len(sides) > 2:
        raise ValueError(text)
    values = tuple(int(v) for v in sides)  # a ValueError: argparse's "invalid size value: '...'"
    return values[0] if len(values) == 1 else values


def _input_shape(text: str) -> tuple[int, int, int]:
    """``--input N,C,H,W`` as ``(N, C, H)`` (the model sees H == W)."""
    try:
        n, c, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise CnnlabError(f"--input must be N,C,H,W with four integers, e.g. 1,1,28,28; got {text!r}") from None
    if min(n, c, h, w) < 1 or h != w:
        raise CnnlabError(f"--input must be positive with a square image (H == W), got {text!r}")
    return n, c, h


def _share_or_count(text: str) -> int | float:
    """An integer's text as an int, anything else as a float (TrainConfig tells a count from a share by type)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


_share_or_count.__name__ = "float"  # argparse's "invalid float value: 'x'", as before


def _add_config_flags(p: argparse.ArgumentParser, skip: tuple[str, ...] = ("model",)) -> None:
    """One flag per TrainConfig field (``--batch-size``), default None (= not given), but those in ``skip``."""
    from cnnlab.train.config import CHOICES, config_fields, field_types

    kinds = field_types()
    for f in config_fields():
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = kinds[f.name]
        help_text = f.metadata.get("help", "")
        if f.name == "augment":  # a preset name; the old switch's --augment and --no-augment keep their meaning
            p.add_argument(flag, nargs="?", const="crop-flip", default=None, metavar="PRESET", help=help_text)
            p.add_argument("--no-augment", dest="augment", action="store_const", const=False,
                           help="no augmentation (--augment none)")
        elif kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif f.name in ("val_split", "test_split"):  # 0.1 a share, 5000 a count: a count's text stays an int
            p.add_argument(flag, type=_share_or_count, default=None, help=help_text)
        else:
            p.add_argument(flag, type=kind, default=None, choices=CHOICES.get(f.name), help=help_text)


def _given_config(args, skip: tuple[str, ...]) -> dict:
    """The TrainConfig flags the user gave (not None), but those in ``skip``."""
    from cnnlab.train.config import config_fields

    return {f.name: getattr(args, f.name) for f in config_fields()
            if f.name not in skip and getattr(args, f.name, None) is not None}


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="model name (see `cnnlab models`); omit with --resume")
    _add_config_flags(p)
    p.add_argument("--config", metavar="FILE", help="settings from a .toml or .json file keyed by these flags' "
                   "names (batch_size = 256; a run's config.json works too); flags given here override it")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from RUN_DIR/last.pt")
    p.add_argument("--force", action="store_true", help="reuse a non-empty run folder: remove what an earlier run "
                   "wrote there (config.json, metrics.csv, checkpoints, tb/, report, ...); other files stay")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--no-report", action="store_true", help="skip report.html at the end (a --resume keeps the run's "
                   "own choice; `cnnlab report RUN_DIR` writes it any time)")


def _cmd_train(args) -> int:
    from cnnlab.train import make_config, resume, train
    from cnnlab.train.config import check_given_flags_apply, config_fields

    overrides = {f.name: getattr(args, f.name) for f in config_fields() if f.name not in ("model", "recipe")}
    common = dict(quiet=args.quiet, report=not args.no_report)
    given = {k: v for k, v in overrides.items() if v is not None}
    if args.resume:
        if args.model or args.recipe or args.config or set(given) - {"epochs", "data_dir"}:
            raise CnnlabError("--resume takes the run's own config; expected no model, recipe, --config or other "
                              "training flags than --epochs (to train a finished run further) and --data-dir (where "
                              "its data is now, if it moved)")
        # None: finished already, which is no error
        resume(args.resume, epochs=given.get("epochs"), data_dir=given.get("data_dir"), **common)
        return 0
    else:
        from cnnlab.config_file import read_config_file

        from_file = read_config_file(args.config) if args.config else {}
        for flag, other in (("epochs", "time_budget"), ("time_budget", "epochs")):
            if flag in given:  # a flag for the run's length replaces the file's, in either form
                from_file.pop(other, None)
        if "balance" in given and "best_by" not in given:  # a run's config.json holds the one its --balance chose
            from_file.pop("best_by", None)
        settings = {**from_file, **given}  # the flags win
        model, recipe = args.model or settings.pop("model", None), args.recipe or settings.pop("recipe", "book")
        settings.pop("model", None), settings.pop("recipe", None)
        if not model:
            raise CnnlabError("expected a model name (see `cnnlab models`), a --config file naming one, or --resume "
                              "RUN_DIR, got none of them")
        check_given_flags_apply(given, make_config(model, recipe, **settings))
        result = train(model, recipe=recipe, force=args.force, **common, **settings)
    return 0 if result is not None else 1


def _cmd_eval(args) -> int:
    from cnnlab.evaluate import format_eval
    from cnnlab.explore.evaluation import evaluate_any

    result = evaluate_any(args.checkpoint, data_dir=args.data_dir, dataset=args.dataset, options=_model_options(args),
                          device=args.device, skip_bad=args.skip_bad_images)
    print(json.dumps(writable_json(result.to_dict()), indent=2) if args.json else format_eval(result))
    return 0


def _cmd_models(args) -> int:
    if args.pretrained:
        from cnnlab.models.imagenet import pretrained_table

        print(pretrained_table())
        return 0
    from cnnlab.models.summary import models_table

    print(models_table())
    return 0


def _cmd_datasets(args) -> int:
    from cnnlab.data import datasets_table

    print(datasets_table())
    return 0


def _cmd_summary(args) -> int:
    from cnnlab.models import list_models
    from cnnlab.models.summary import summarize

    zoo = args.model in list_models(exercises=True) + list_models(pretrained=True)
    # an ImageNet backbone given a state dict of its network is opened as explore opens it, shaped as the file has it
    backbone = args.model in list_models(pretrained=True) and args.weights is not None
    # the zoo's own, built on the meta device at any --input; a bare word that is none of them is a typo'd one, which
    # summarize names with the zoo's names
    if not backbone and (zoo or not names_a_model_from_elsewhere(args.model)):
        for flag, value in (("--input-size", args.input_size), ("--layout", args.layout),
                            ("--weights", args.weights)):
            if zoo and value is not None:
                raise CnnlabError(f"{flag} is for a model from elsewhere; {args.model} is one of cnnlab's models, "
                                  "whose input --input N,C,H,W sets")
        batch, in_channels, size = args.input or (1, 1, None)
        print(summarize(args.model, input_size=size, in_channels=in_channels, ops=args.ops, batch=batch))
        return 0
    from cnnlab.explore.sources import summarize_any

    for flag, given in (("--input", args.input is not None), ("--ops", args.ops != "torch")):
        if given:
            raise CnnlabError(f"{flag} is for cnnlab's own models; {args.model} is a model from elsewhere, fed as "
                              "its graph says (--input-size, --layout where it does not)")
    print(summarize_any(args.model, _model_options(args)))
    return 0


def names_a_model_from_elsewhere(text: str) -> bool:
    """Whether ``cnnlab summary TEXT`` names a file, ``module:function`` or one of torchvision's pretrained networks
    (``torchvision-NAME``) rather than one of cnnlab's models (whose names hold none of ``. / : \\``); a file or
    folder that is there (``runs``, a run's folder) is one too, not an unknown model's name."""
    from cnnlab.models.torchvision_zoo import is_zoo_name

    return any(c in text for c in "./:\\") or is_zoo_name(text) or os.path.exists(text)


def _cmd_kernel(args) -> int:
    from cnnlab.kernel_demo import run_kernel_demo

    run_kernel_demo(out=args.out, force=args.force)
    return 0


def _cmd_report(args) -> int:
    from cnnlab.report import read_run, write_report

    run = read_run(args.run_dir)
    print(write_report(run, data_dir=args.data_dir, device=args.device), flush=True)
    unfinished = run.unfinished()
    if unfinished:  # said here as well as on the page, which the user may not open at once
        print(f"cnnlab report: note: {unfinished}", file=sys.stderr)
    return 0


def _cmd_predict(args) -> int:
    from cnnlab.explore.sources import predict_any_chunks
    from cnnlab.predict import as_json, format_prediction, write_predictions_csv, write_submission

    if args.csv is not None:  # before the model is opened and the pictures read: a bad path costs nothing
        check_output_file(args.csv, args.force, "--csv ")
    elif args.force:
        raise CnnlabError("--force lets --csv replace an existing file; expected it only beside --csv")
    elif args.like is not None:
        raise CnnlabError("--like says how --csv is written; expected it only beside --csv")
    if args.like is not None and not os.path.isfile(args.like):
        raise CnnlabError(f"--like {args.like} is not a file; expected the contest's sample submission CSV "
                          f"(sample_submission.csv)")
    out = sys.stdout  # the predictions' stream; what the model's code prints is sent to stderr below
    document: list[dict[str, Any]] = []  # --json's, printed whole once every picture is done
    written: list[dict[str, Any]] = []  # --csv's: each picture's file and top class (or error), written at the end
    most = failed = diverged = 0
    reader_left = False

    def emit(text: str) -> None:
        """Print ``text`` to stdout at once, unless its reader has gone (`| head`): then nothing more is printed."""
        nonlocal reader_left
        if reader_left:
            return
        try:
            print(text, file=out, flush=True)
        except BrokenPipeError:  # the failures still go to stderr
            _reader_left(out)
            reader_left = True

    # What the model's own code prints (module:function's import, build and forward) goes to stderr: stdout holds
    # the predictions alone, which --json promises a reader (jq) as one JSON document. Closing the chunks on Ctrl-C
    # or once the reader has gone clears the progress bar at once.
    with contextlib.redirect_stdout(sys.stderr), contextlib.closing(predict_any_chunks(
            args.checkpoint, args.images, _model_options(args), invert=args.invert, topk=args.top,
            device=args.device, skip_bad=True, progress=True)) as chunks:
        for chunk in chunks:  # each picture's line as soon as its chunk is classified, in the sorted order
            for r in chunk:
                if "error" in r:  # one line each, in its place; the exit code says that some failed
                    failed += 1
                    print(f"cnnlab predict: error: {' '.join(r['error'].split())}", file=sys.stderr)
                else:
                    most = max(most, len(r["top"]))
                    diverged += any(t["probability"] is None for t in r["top"])
                if args.jsonl:  # a bad file's object too, in its place, as in --json's document
                    emit(json.dumps(as_json(r)))
                elif not args.json and "error" not in r:
                    emit(format_prediction(r))
            if args.json:
                document += [as_json(r) for r in chunk]
            if args.csv is not None:
                written += [r if "error" in r else {"file": r["file"], "top": r["top"][:1]} for r in chunk]
            elif reader_left:  # nobody reads the answers to the pictures left: they are not classified
                break
    if args.json:
        emit(json.dumps(document, indent=2))
    if args.like is not None:
        unnamed = write_submission(args.csv, written, args.like, force=args.force)
        print(f"cnnlab predict: wrote {args.csv}: the rows of {args.like}, each picture's top class"
              + (f" ({unnamed} picture(s) predicted that it does not name left out)" if unnamed else ""),
              file=sys.stderr)
    elif args.csv is not None:
        root = write_predictions_csv(args.csv, written, force=args.force)
        rows = sum("top" in r for r in written)
        print(f"cnnlab predict: wrote {args.csv}: {rows} picture(s), names relative to {root}"
              + (f" ({failed} unreadable left out)" if failed else ""), file=sys.stderr)
    if 0 < most < args.top:  # the model has fewer classes than asked for: every one is shown
        print(f"cnnlab predict: note: --top {args.top} asks for more classes than the model's {most}; all "
              f"{most} are shown", file=sys.stderr)
    if diverged:  # NaN or infinite outputs: a diverged model, whose figures mean nothing
        print(f"cnnlab predict: note: the model's outputs for {diverged} of the images are not numbers (NaN or "
              "infinite: a diverged model?); their probabilities are shown as -", file=sys.stderr)
    return 2 if failed else 0


def _model_options(args):
    """The model flags (:func:`_add_model_flags`) as :class:`cnnlab.explore.model.Options`."""
    from cnnlab.explore.model import Options

    return Options.from_flags(getattr(args, "classes", None), args.input_size, getattr(args, "mean", None),
                              getattr(args, "std", None), getattr(args, "pixel_range", None),
                              getattr(args, "bgr", False), args.layout, getattr(args, "multi_label", False),
                              args.weights, getattr(args, "no_classes", False))


def _cmd_export(args) -> int:
    from cnnlab import export
    from cnnlab.inference import load_trained

    verify = args.verify if args.verify is not None else export.INT8_CHECK_IMAGES if args.format == "onnx-int8" else 0
    export.check_export_arguments(args.output, args.format, args.force, args.calibration,  # before data is read
                                  args.opset)
    if verify:  # a dataset it cannot read is one line before anything is written
        export.verification_images(args.checkpoint, verify, data_dir=args.data_dir)
    trained = load_trained(args.checkpoint, "cpu")
    print(export.export_checkpoint(trained, args.output, format=args.format, force=args.force,
                                   calibration=args.calibration, data_dir=args.data_dir, opset=args.opset), flush=True)
    if trained.meta.tta:
        # stderr, as every command's notes: stdout keeps only what the command makes (the file's path)
        print(f"cnnlab export: note: {export.TTA_NOTE} ({export.TTA_KEY} in its metadata)", file=sys.stderr, flush=True)
    if verify:
        print(export.verify_export(args.checkpoint, args.output, images=verify, data_dir=args.data_dir))
    return 0


def _cmd_explore(args) -> int:
    try:
        from cnnlab.explore import explore
        if not args.export:  # serving needs uvicorn too: Starlette comes without it (FastAPI's)
            import uvicorn  # noqa: F401
    except ImportError as e:  # the web stack is an extra: `pip install cnnlab[explore]`
        if (e.name or "cnnlab").split(".")[0] == "cnnlab":  # cnnlab's own import failing is no missing extra
            raise
        raise CnnlabError(f"cnnlab explore needs the explore extra (pip install 'cnnlab[explore]'), missing "
                          f"{e.name}") from None
    # Ctrl-C while it serves stops the server (exit 0); before that, or during --export, it is an interruption
    saved = explore(args.path, images=args.images, classes=args.classes, input_size=args.input_size, mean=args.mean,
                    std=args.std, pixel_range=args.pixel_range, bgr=args.bgr, layout=args.layout,
                    multi_label=args.multi_label, weights=args.weights, export=args.export, force=args.force,
                    host=args.host, port=args.port, open_browser=not args.no_browser,
                    skip_bad_images=args.skip_bad_images, allow_hosts=args.allow_host, no_classes=args.no_classes)
    if saved:  # --export: the page was written, not served
        inputs, maps = len(saved["inputs"]), saved["maps_per_stage"]
        print(f"{saved['path']}: {saved['bytes'] / 2**20:.1f} MiB, {inputs} input{'s' * (inputs != 1)}, {maps} "
              f"channel{'s' * (maps != 1)} per stage", flush=True)
    return 0


def _cmd_lr_find(args) -> int:
    from cnnlab.data.folder import refuse_writing_into
    from cnnlab.lr_find import CONFIG_FIELDS, check_plot_path, lr_find, write_lr_find_plot
    from cnnlab.train import make_config
    from cnnlab.train.config import check_given_flags_apply

    plot = check_plot_path(args.out or f"lr-find-{args.model}.png", args.force)  # before the sweep, not after it
    refuse_writing_into(args.dataset or "", plot, "--out" if args.out else "the default plot (here)")
    skip = ("recipe", *(n for n in _config_names() if n not in CONFIG_FIELDS))
    given = _given_config(args, skip)
    # As train refuses them: the sweep builds the optimizer train would, so --momentum with Adam does nothing here too
    check_given_flags_apply(given, make_config(args.model, args.recipe or "book", **given))
    result = lr_find(args.model, args.recipe or "book", start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps,
                     **given)
    write_lr_find_plot(result, plot, force=args.force)
    stop = "stopped where the loss diverged" if result.diverged else "no divergence up to the end of the range"
    print(f"swept {len(result.lrs)} steps from {result.lrs[0]:.1e} to {result.lrs[-1]:.1e} ({stop}); plot: {plot}")
    print(result.summary())
    return 0


def _config_names() -> tuple[str, ...]:
    from cnnlab.train.config import config_fields

    return tuple(f.name for f in config_fields())


def _cmd_compare(args) -> int:
    from cnnlab.compare import compare

    plot = None if args.no_plot else args.plot
    print(compare(args.runs, fmt=args.format, plot=plot, force=args.force))
    if plot is not None:  # on stderr: stdout is the table, perhaps piped as CSV or JSON
        print(f"cnnlab compare: wrote {plot}", file=sys.stderr)
    return 0


def _cmd_study(args) -> int:
    from cnnlab.study import list_studies, load_study, run_study

    if args.list or not args.name:
        if not args.list:
            raise CnnlabError(f"expected a study name or --list; studies: {', '.join(list_studies())}")
        for name in list_studies():
            study = load_study(name)
            print(f"{name:28s} d2l {study.section:16s} {study.title} ({len(study.variants)} variants)")
        return 0
    try:
        result = run_study(args.name, out=args.out, overrides=_given_config(args, ("model", "out")),
                           quiet=args.quiet, report=not args.no_report, seeds=args.seeds)
    except Interrupted:  # the variant's trainer said where it stopped; what resumes is the study, not the run
        print("cnnlab study: the study resumes with the same command", flush=True)
        raise
    print(result.summary)
    print(f"study folder: {result.folder} (summary.md, table.md, curves.png)")
    if result.refused:  # bad settings for some variants: the same command would be refused again
        print(f"cnnlab study: error: {len(result.refused)} of the study's variants were refused before training "
              f"({', '.join(result.refused)}); see their lines above", file=sys.stderr)
        return 2
    return 1 if result.failed else 0


def _cmd_sweep(args) -> int:
    from cnnlab.sweep import LOCAL, SweepSpec, format_summary, sweep

    fixed = _given_config(args, ("model", "recipe", "out"))
    # The study's own settings: None or False when not given (SweepSpec's defaults then), so that a worker joining
    # a study can be told it does not set them
    settings = {"trials": args.trials, "pruner": args.pruner, "startup_trials": args.startup_trials,
                "warmup_epochs": args.warmup_epochs, "allow_test_objective": args.allow_test_objective,
                "seed": args.sampler_seed, "report": args.report}
    given = {k: v for k, v in settings.items() if v is not None and v is not False}  # a 0 is given (0 == False)
    spec = None
    if args.model:
        spec = SweepSpec(args.model, args.param or [], recipe=args.recipe or "book", overrides=fixed, **given)
    elif args.param or set(fixed) - set(LOCAL) or args.recipe or given:
        flags = ["--" + ("sampler-seed" if k == "seed" else k.replace("_", "-")) for k in given]
        raise CnnlabError("without MODEL, cnnlab sweep joins --study NAME with its stored settings (its search, "
                          "training flags, trials and pruner); expected no --param, training or study flags then "
                          "but this machine's own " + "/".join("--" + k.replace("_", "-") for k in LOCAL)
                          + (f", got {' '.join(flags)}" if flags else ""))
    try:
        summary = sweep(spec, study=args.study, storage=args.storage, out=args.out, jobs=args.jobs,
                        heartbeat=args.heartbeat, local=None if spec else fixed)
    except Interrupted as e:
        print(str(e), flush=True)
        raise
    print(format_summary(summary))
    return 0


def _add_model_flags(p: argparse.ArgumentParser, multi_label: bool = True, feeding: bool = True) -> None:
    """The flags that say how to feed a model from elsewhere (its classes, input size, normalisation, layout), for
    ``explore``, ``predict`` and ``eval``: read by :meth:`cnnlab.explore.model.Options.from_flags`. ``multi_label``:
    offer ``--multi-label`` (not to ``eval``, which scores one class per image); ``feeding``: offer the flags of its
    pixels and classes too (not to ``summary``, whose layer table needs only the input's shape and the weights)."""
    if feeding:
        p.add_argument("--classes", metavar="FILE", help="a file of a model's class names: one per line, or a JSON "
                       "list of strings (the file's path, not the names themselves)")
    p.add_argument("--input-size", type=_flag_type(_input_size, "size"), metavar="SIZE", help="a model's input "
                   "size when its graph does not fix it (needed for module:function): a side (224) or HEIGHTxWIDTH "
                   "(256x128)")
    if feeding:
        p.add_argument("--mean", type=float, nargs="+", help="per-channel mean the model's input subtracts, on the "
                       "scale of --pixel-range and in the model's channel order (default: none)")
        p.add_argument("--std", type=float, nargs="+", help="per-channel std the model's input is divided by")
        p.add_argument("--pixel-range", choices=("0-1", "0-255"), help="the range of a model's input pixels before "
                       "--mean/--std: 0-1 (pixels / 255, the default, as torchvision's models) or 0-255 (the values "
                       "themselves, as Caffe-converted models and Keras's 'caffe' preprocessing)")
        p.add_argument("--bgr", action="store_true", help="the model takes blue, green, red channels (OpenCV's and "
                       "Caffe's order) instead of RGB")
    p.add_argument("--layout", choices=("NCHW", "NHWC"), help="a model's input layout when the graph does not "
                   "tell (NHWC: Keras/TensorFlow)")
    if multi_label and feeding:
        p.add_argument("--multi-label", action="store_true", help="read each of a model's outputs as its own "
                       "class's probability (sigmoid; classes need not sum to 100%%) instead of a softmax over them; a "
                       "model that ends in Sigmoid is read so anyway, and without it a model of one output is a binary "
                       "classifier")
    p.add_argument("--weights", metavar="FILE", help="a state dict (torch.save(model.state_dict(), FILE), read "
                   "weights-only, or a .safetensors file) for the network named: an ImageNet backbone's architecture "
                   "fine-tuned elsewhere (imagenet-resnet18 --weights mine.pth: its classes and input channels read "
                   "from the file) or what module:function builds")


def _add_no_classes(p: argparse.ArgumentParser) -> None:
    """``--no-classes``, for ``explore`` and ``summary``, which show any network."""
    p.add_argument("--no-classes", action="store_true", help="read a model from elsewhere as a network, not a "
                   "classifier, whatever its outputs (an embedding's N x 512, a detector's N x 4 boxes): what it "
                   "returns is shown as it is, with no classes")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnlab", description="Train, inspect and ship the CNNs of d2l ch. 7-8 on "
                     "Fashion-MNIST, another registered dataset or a folder of your images; "
                     "look inside any CNN with explore.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_CommandParser)

    p = sub.add_parser("train", help="train a model (on Fashion-MNIST unless --dataset says otherwise) and "
                                     "write a run folder")
    _add_train_flags(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="test accuracy, per-class accuracy and confusion matrix of a checkpoint, or of "
                       "any classifier explore opens on a labelled dataset")
    p.add_argument("checkpoint", metavar="model", help="a cnnlab checkpoint (.pt), or a model from elsewhere as "
                   "explore takes it (a .onnx or .pt2 file, an ImageNet backbone's name, torchvision-NAME, "
                   "module:function), scored on --data-dir or --dataset")
    p.add_argument("--data-dir", help=DATA_DIR_HELP + "; for a model from elsewhere: a folder of class subfolders "
                   "or labelled by its labels.csv or metadata.csv, read as --dataset folder:PATH (its test split if "
                   "it has one, else all of it), or --dataset's folder")
    p.add_argument("--dataset", metavar="NAME", help="a registered dataset to score on (cnnlab datasets): for a "
                   "checkpoint, another than the run's of its classes or some of them (matched by name)")
    p.add_argument("--skip-bad-images", action="store_true", help="a folder's image files that cannot be read are "
                   "left out (counted) instead of refused")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_model_flags(p, multi_label=False)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("--pretrained", action="store_true", help="list the models with ImageNet weights instead (train "
                   "one with `cnnlab train NAME --pretrained`), one a line, name first, and where their file goes")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("datasets", help="list the registered datasets (train on one with --dataset NAME)")
    p.set_defaults(func=_cmd_datasets)

    p = sub.add_parser("summary", help="per-layer output shapes, parameters and MACs of a model")
    p.add_argument("model", help="one of cnnlab's models (cnnlab models lists them), or any model explore opens: a "
                   ".onnx, .pt2 or cnnlab .pt file, torchvision-NAME (torchvision's pretrained classifiers, "
                   "segmentation models and detectors), or module:function (imports and calls YOUR code)")
    p.add_argument("--input", metavar="N,C,H,W", type=_flag_type(_input_shape),
                   help="input shape of one of cnnlab's models (default: 1,1,S,S at the model's input size)")
    p.add_argument("--ops", default="torch", choices=("torch", "scratch"))
    _add_model_flags(p, feeding=False)
    _add_no_classes(p)
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("kernel", help="d2l 7.2.3-7.2.4: detect edges, then learn the edge kernel")
    p.add_argument("--out", help="save a figure of X, Y and the learned kernel here (PNG)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.set_defaults(func=_cmd_kernel)

    p = sub.add_parser("report", help="write RUN_DIR/report.html (of a run not finished yet: of its last "
                       "checkpoint)")
    p.add_argument("run_dir")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("predict", help="classify image files with a checkpoint, or any classifier explore opens")
    p.add_argument("checkpoint", metavar="model", help="a cnnlab checkpoint (.pt), or a model from elsewhere as "
                   "explore takes it: a .onnx or .pt2 file (a cnnlab export, or anyone's), an ImageNet backbone's "
                   "name (imagenet-resnet18), torchvision-NAME (torchvision-resnet18) or module:function (imports "
                   "and calls YOUR code)")
    p.add_argument("images", nargs="+", help="image files, or folders whose image files are all classified, each "
                   "line printed as its chunk of pictures is done (a bad file is reported on stderr and skipped; the "
                   "exit code is then 2)")
    p.add_argument("--invert", action="store_true",
                   help="for dark clothes on a light background (Fashion-MNIST is light on dark)")
    p.add_argument("--top", type=_flag_type(_count("--top")), default=3, help="the classes shown per image (default 3)")
    p.add_argument("--device", default="auto")
    given_as = p.add_mutually_exclusive_group()
    given_as.add_argument("--json", action="store_true",
                          help="one JSON document of every picture, printed at the end")
    given_as.add_argument("--jsonl", action="store_true",
                          help="JSON Lines: one JSON object per picture, each printed as its chunk is done (a bad "
                               "file's with its error), for a folder too large to hold every answer")
    p.add_argument("--csv", metavar="OUT.csv", help="also write the answers as a CSV: file_name (relative to the "
                   "folder predicted), label (the top class), probability; written into that folder, it labels it "
                   "as --dataset folder:FOLDER/OUT.csv (an unreadable file has no row)")
    p.add_argument("--like", metavar="SAMPLE.csv", help="write --csv as this CSV is written (a contest's "
                   "sample_submission.csv of id,label): its header and rows, each picture named as it names it "
                   "(an id without the extension too), the label its top class")
    p.add_argument("--force", action="store_true", help="let --csv replace an existing file")
    _add_model_flags(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("export", help="export a checkpoint for deployment (ONNX with preprocessing inside)")
    p.add_argument("checkpoint")
    p.add_argument("--format", default="onnx", choices=("onnx", "pt2", "onnx-int8", "safetensors"),
                   help="onnx (onnxruntime-verified), onnx-int8 (onnxruntime static quantization, needs "
                        "--calibration), pt2 (torch.export) or safetensors (the network's weights alone, for a "
                        "program that builds it: torchvision's architecture for an ImageNet backbone); TorchScript "
                        "is deprecated in torch 2.14")
    p.add_argument("--output", required=True, help="the file to write: .onnx (onnx, onnx-int8), .pt2 or "
                   ".safetensors")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--calibration", metavar="N", type=_flag_type(_count("--calibration")),
                   help="onnx-int8: calibrate on N training images of the checkpoint's dataset (e.g. 256)")
    p.add_argument("--verify", metavar="N", type=_flag_type(_count("--verify")),
                   help="then print the top-1 agreement with PyTorch on N test images, a seeded sample (default: 500 "
                        "for onnx-int8, none otherwise: float exports are checked on random inputs to 1e-4 + 1e-5 x "
                        "the largest logit)")
    p.add_argument("--data-dir", help=f"for --calibration and --verify: {DATA_DIR_HELP}")
    p.add_argument("--opset", metavar="N", type=_flag_type(_count("--opset")),
                   help="onnx, onnx-int8: the ONNX operator set, for a runtime that knows only older ones (18 and "
                        "above; default: the exporter's, 20 with torch 2.14)")
    p.set_defaults(func=_cmd_export)

    # The help is the manual a wheel's user has: docs/ is the checkout's, not installed (tests/test_packaging.py).
    p = sub.add_parser("explore", help="a local web page to look inside trained runs or any CNN, classifier or "
                       "not (ONNX, torch.export, torchvision-NAME, module:function), on your images",
                       description="Serve a page (shipped in the package: no network, no CDN) that shows, for a "
                       "runs folder: every run's status, test accuracy and curves (several overlaid); for one run "
                       "and one test image, an upload or a drawing: the top classes, the feature maps of every "
                       "stage, Grad-CAM and saliency, the first-layer kernels and the layer table; d2l 7.2-7.5's "
                       "convolution and pooling computed live, with padding, stride and receptive fields; a run "
                       "still training, live. For one model (path below): its stages, top classes, Grad-CAM and "
                       "layer table on the --images given (a flat folder, class subfolders or a CSV: the labels) or an "
                       "upload. Examples: "
                       "cnnlab explore runs/ --port 0 --no-browser (any free port, print the address); cnnlab "
                       "explore model.onnx --images photos/ --export page.html (one static page, no server).")
    p.add_argument("path", nargs="?", default="runs", help="a runs folder or one run folder (default: runs); or "
                   "one model: a .onnx, .pt2 (torch.export) or cnnlab .pt file, an ImageNet backbone's name "
                   "(imagenet-resnet18: its weights and class names), torchvision-NAME (any of torchvision's "
                   "classifiers, segmentation models and detectors with its DEFAULT weights and their categories: "
                   "torchvision-lraspp_mobilenet_v3_large), or module:function (imports and calls YOUR code: a "
                   "function returning an nn.Module)")
    p.add_argument("--images", help="a model's inputs: a folder of images, or of class subfolders (the labels), or "
                   "of images labelled by its labels.csv or metadata.csv, or a CSV naming them (PATH/train.csv), "
                   "read as --dataset folder:PATH reads it")
    _add_model_flags(p)
    _add_no_classes(p)
    p.add_argument("--export", metavar="PAGE.html", help="write one self-contained HTML page (no server, no "
                   "network) with the chosen images through every stage, instead of serving")
    p.add_argument("--force", action="store_true", help="overwrite an existing --export file")
    p.add_argument("--skip-bad-images", action="store_true", help="leave out the --images files that cannot be "
                   "read (each named on stderr and on the page) instead of refusing the folder")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1, loopback only; anything else is "
                   "reachable from the network and prints a warning)")
    p.add_argument("--port", type=_flag_type(_port), help="port (0: any free one; default 8765)")
    p.add_argument("--allow-host", action="append", metavar="NAME", help="a host name the page is opened by through "
                   "a proxy that forwards to this server (JupyterHub's jupyter-server-proxy, a cloud IDE's port "
                   "forwarding, a tunnel); .example.org allows every name under it; repeatable. Other names are "
                   "refused on loopback, so that no web page can point its own name at this server")
    p.add_argument("--no-browser", action="store_true", help="print the address without opening a browser")
    p.set_defaults(func=_cmd_explore)

    p = sub.add_parser("lr-find", help="learning-rate range test: sweep the lr exponentially for ~100 steps, plot "
                       "the loss and suggest a --lr for train")
    p.add_argument("model", help="model name (see `cnnlab models`)")
    p.add_argument("--start-lr", type=float, default=1e-6, help="first learning rate (default 1e-6)")
    p.add_argument("--end-lr", type=float, default=10.0, help="last learning rate (default 10)")
    p.add_argument("--steps", type=int, default=100, help="mini-batches in the sweep (default 100)")
    p.add_argument("--out", metavar="FILE.png", help="the plot (default lr-find-MODEL.png)")
    p.add_argument("--force", action="store_true", help="overwrite an existing plot file")
    from cnnlab.lr_find import CONFIG_FIELDS

    _add_config_flags(p, skip=tuple(n for n in _config_names() if n not in CONFIG_FIELDS))
    p.set_defaults(func=_cmd_lr_find)

    p = sub.add_parser("compare", help="one table and one curves plot of several run folders")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders, globs of them, or folders holding them")
    p.add_argument("--format", default="md", choices=("md", "csv", "json"), help="the table's format (default md)")
    p.add_argument("--plot", default="compare.png", help="the curves' PNG file (default compare.png)")
    p.add_argument("--no-plot", action="store_true", help="print the table only")
    p.add_argument("--force", action="store_true", help="overwrite an existing plot file")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("study", help="run a ready-made study of a book exercise (see --list), then compare")
    p.add_argument("name", nargs="?", help="a study name from --list, or a study .toml file")
    p.add_argument("--list", action="store_true", help="list the studies")
    p.add_argument("--out", help="the study folder (default studies/NAME); the same command resumes it")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.add_argument("--no-report", action="store_true", help="skip report.html in the variants' run folders")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="train every variant once per seed (run folders NAME-seedS, e.g. --seeds 0 1 2): the summary "
                        "ranks the variants by their mean and says whether the seeds' spread settles the order")
    _add_config_flags(p, skip=("model", "out"))
    p.set_defaults(func=_cmd_study)

    p = sub.add_parser("sweep", help="hyper-parameter search on Optuna; every trial is a run folder")
    p.add_argument("model", nargs="?", help="the model to tune; omit to join --study NAME with its settings")
    p.add_argument("--param", action="append", metavar="NAME=KIND:ARGS",
                   help="a searched field: lr=loguniform:1e-3:1, momentum=uniform:0:0.99, epochs=int:2:10, "
                        "batch_size=choice:64,128,256 (repeat for more)")
    p.add_argument("--trials", type=int, help="trials in all, across every worker (default 20)")
    p.add_argument("--jobs", type=int, default=1, help="trials at once on this machine, one process each")
    p.add_argument("--study", help="the study's name (default MODEL-TIME); give it to resume or join a sweep")
    p.add_argument("--storage", metavar="URL", help="a database URL Optuna accepts, e.g. postgresql://user@host/db "
                   "to share the study between machines (default: SQLite study.db in the sweep folder)")
    p.add_argument("--out", help="the sweep folder: trials' run folders, plots, summary (default sweeps/STUDY)")
    p.add_argument("--pruner", choices=("median", "hyperband", "none"),
                   help="how bad trials are stopped early (default median)")
    p.add_argument("--startup-trials", type=int, help="median pruner: trials before any is pruned (default 5)")
    p.add_argument("--warmup-epochs", type=int, help="median pruner: epochs before a trial is judged (default 1)")
    p.add_argument("--allow-test-objective", action="store_true",
                   help="tune on the test set when no --val-split is given (the book's way; biased)")
    p.add_argument("--sampler-seed", type=int, help="seed of Optuna's sampler")
    p.add_argument("--heartbeat", type=float, default=10.0,
                   help="seconds between a trial's heartbeats; a worker silent for 3 is failed (default 10)")
    p.add_argument("--report", action="store_true", help="write report.html in every trial's run folder")
    _add_config_flags(p, skip=("model", "out"))
    p.set_defaults(func=_cmd_sweep)

    for command in sub.choices.values():  # `cnnlab train ... --debug` works as well as `cnnlab --debug train ...`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _reader_left(stdout: IO[str] | None = None) -> None:
    """Point stdout (``sys.stdout``, or the stream it was before a redirection) at /dev/null once its reader has
    gone, so that Python's flush at exit does not fail again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), (stdout or sys.stdout).fileno())


class _Terminated(BaseException):
    """SIGTERM outside a training loop (which checkpoints on it): it unwinds as Ctrl-C does, so that a file being
    written (an export's temporary file, int8's work folder) is removed on the way out."""


def _terminate(signum, frame) -> None:
    raise _Terminated


# Commands with their own answer to SIGTERM: a run checkpoints, a sweep passes it on to its workers and waits.
_OWN_SIGNALS = ("train", "study", "sweep")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = None
    if args.command not in _OWN_SIGNALS:
        try:
            previous = signal.signal(signal.SIGTERM, _terminate)
        except ValueError:  # not the main thread: signals are not ours to take
            pass
    try:
        with file_names_written():
            return _run(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args) -> int:
    from cnnlab.train.distributed import launched_processes

    try:
        processes = launched_processes()
        if args.command != "train" and processes > 1:  # each process would do the whole command
            raise CnnlabError(f"only cnnlab train runs across processes, and torchrun started {processes} of them "
                              f"(WORLD_SIZE); expected cnnlab {args.command} without torchrun")
        return args.func(args)
    except CnnlabError as e:
        if args.debug:
            raise
        print(f"cnnlab {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)  # one line, always
        return 2
    except Interrupted as e:  # the trainer already printed where the checkpoint is and how to resume
        return 128 + e.signum
    except BrokenPipeError:  # `cnnlab models | head`: the reader left; stop quietly as Unix tools do
        _reader_left()
        return 0
    except KeyboardInterrupt:  # Ctrl-C outside a training loop (eval, export, data loading)
        if args.debug:
            raise
        print(f"cnnlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"cnnlab {args.command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except Exception as e:  # a bug, or the machine failing (out of memory, disk full): tracebacks need --debug
        if args.debug:
            raise
        print(f"cnnlab {args.command}: internal error: {type(e).__name__}: {summary(e, 300)} "
              f"(`cnnlab --debug {args.command} ...` shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
