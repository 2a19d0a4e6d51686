"""Every `cnnlab ...` line in the fenced shell blocks of README.md and docs/*.md parses with the real CLI parser.

Parse only: nothing trains. Beyond argparse's own checks (flags, choices, types), the names argparse takes as plain
strings are checked against their registries (models, datasets, studies), and a `cnnlab train MODEL ...` line's
settings are merged into a TrainConfig as `cnnlab train` merges them, so a value TrainConfig refuses, or a flag that
would do nothing (`--momentum` with Adam), fails here as it would for the reader.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
from torch.distributed.run import get_args_parser as torchrun_parser

from cnnlab import cli
from cnnlab.data import list_datasets
from cnnlab.data.registry import FOLDER_PREFIX
from cnnlab.errors import CnnlabError
from cnnlab.models import list_models
from cnnlab.study import list_studies
from cnnlab.sweep.space import parse_param
from cnnlab.train import make_config
from cnnlab.train.config import check_given_flags_apply, config_fields

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCKS = ("bash", "sh", "shell", "console")
# Words before the command itself: a loop's, a timer's, nice's (with its -n N), an environment assignment.
_PREFIX_WORDS = ("do", "then", "time")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# An optional part written as the usage line writes it: `[--classes FILE]`.
_OPTIONAL = re.compile(r"\[(--[^\]]*)\]")
_SEPARATORS = (";", "&&", "||", "|", "&")
# Commands whose first positional argument is a model name from the registry.
_MODEL_COMMANDS = ("train", "summary", "lr-find", "sweep")


def shell_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, logical line) of each line of the file's fenced shell blocks, continuations joined."""
    lines, fence, pending, start = [], None, "", 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        opening = re.match(r"\s*```\s*(\w*)", line)
        if opening:
            fence = None if fence is not None else opening.group(1)
            continue
        if fence not in SHELL_BLOCKS:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append((start, pending + line))
        pending = ""
    return lines


def unchecked_command_lines(path: Path) -> list[str]:
    """Lines of fenced blocks that are not shell blocks (no language, text) but begin as a cnnlab command would."""
    found, fence = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        opening = re.match(r"\s*```\s*(\w*)", line)
        if opening:
            fence = None if fence is not None else opening.group(1)
        elif fence is not None and fence not in SHELL_BLOCKS and re.match(r"\s*(cnnlab|torchrun) ", line):
            found.append(f"{path.name}: {line.strip()}")
    return found


def _command_words(segment: list[str]) -> list[str] | None:
    """The arguments after `cnnlab` in one simple command, or None when it does not run cnnlab."""
    words = list(segment)
    while words and (words[0] in _PREFIX_WORDS or _ENV.match(words[0])):
        words.pop(0)
    if words[:1] == ["nice"]:
        words = words[3:] if words[1:2] == ["-n"] else words[1:]
    if not words:
        return None
    if words[0] == "cnnlab":
        return words[1:]
    if words[0] == "torchrun" or re.fullmatch(r"(.*/)?python[0-9.]*", words[0]):
        for i in range(len(words) - 1):
            if words[i] == "-m" and words[i + 1] == "cnnlab":
                return words[i + 2:]
    return None


def cnnlab_commands(line: str) -> list[list[str]]:
    """The argument lists of the cnnlab commands a shell line runs (comments dropped, `[--flag X]` taken as given)."""
    lexer = shlex.shlex(_OPTIONAL.sub(r"\1", line), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True  # `--rdzv-endpoint=HOST:29500` and `~/photos` stay one word each
    commands, segment = [], []
    for word in [*lexer, ";"]:
        if word in _SEPARATORS:
            if segment and (argv := _command_words(segment)) is not None:
                commands.append(argv)
            segment = []
        else:
            segment.append(word)
    return commands


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in DOCS:
        for number, line in shell_lines(path):
            for argv in cnnlab_commands(line):
                found.append((f"{path.relative_to(ROOT)}:{number}", argv))
    return found


COMMANDS = documented_commands()


def _strict_parser() -> argparse.ArgumentParser:
    """The CLI's parser, refusing abbreviated flags: `--epoch 3` works today as `--epochs`, and stops working (an
    ambiguous prefix) the day another flag begins so; the docs spell flags out."""
    parser = cli.build_parser()
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.allow_abbrev = False
    return parser


def _parse(argv: list[str]):
    """The parsed arguments, or a pytest failure quoting the parser's own error line."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return _strict_parser().parse_args(argv)
    except SystemExit as e:
        if e.code == 0 and ({"--help", "-h", "--version"} & set(argv)):
            return None
        pytest.fail(f"cnnlab {shlex.join(argv)}\n  is refused by the parser (exit {e.code}): {err.getvalue().strip()}")


def _check_names(args) -> None:
    """The names argparse takes as plain strings: models, datasets, studies, sweep parameters (a CnnlabError)."""
    models = set(list_models(exercises=True)) | set(list_models(pretrained=True))
    if args.command in _MODEL_COMMANDS and args.model is not None and args.model not in models and not (
            args.command == "summary" and cli.names_a_model_from_elsewhere(args.model)):  # a file: any name
        raise CnnlabError(f"no model {args.model!r}; `cnnlab models` lists them")
    if args.command == "explore" and args.path.startswith("imagenet-") and args.path not in models:
        raise CnnlabError(f"no ImageNet backbone {args.path!r}; `cnnlab models --pretrained` lists them")
    if args.command == "study" and args.name and not args.name.endswith(".toml") and args.name not in list_studies():
        raise CnnlabError(f"no study {args.name!r}; `cnnlab study --list` lists them")
    dataset = getattr(args, "dataset", None)
    if dataset is not None and not dataset.startswith(FOLDER_PREFIX) and dataset not in list_datasets():
        raise CnnlabError(f"no dataset {dataset!r}; `cnnlab datasets` lists them")
    for param in getattr(args, "param", None) or []:
        parse_param(param)


def _check_train_settings(args) -> None:
    """A `cnnlab train MODEL` line's settings make a TrainConfig, and none of its flags would be a no-op."""
    if args.command != "train" or args.model is None or args.resume or args.config:
        return
    given = {f.name: getattr(args, f.name) for f in config_fields()
             if f.name not in ("model", "recipe") and getattr(args, f.name) is not None}
    check_given_flags_apply(given, make_config(args.model, args.recipe or "book", **given))


def test_the_docs_hold_the_commands_this_test_reads():
    """The extraction itself: a change of fence style or wording must not leave this test checking nothing."""
    where = {place.split(":")[0] for place, _ in COMMANDS}
    assert len(COMMANDS) >= 60, len(COMMANDS)
    assert {"README.md", "docs/explore.md", "docs/studies.md", "docs/distributed.md"} <= where, where
    by_text = {shlex.join(argv) for _, argv in COMMANDS}
    assert "train resnet18 --recipe speedrun" in by_text  # from a torchrun line
    assert "explore model.onnx --images FOLDER --classes FILE" in by_text  # `[--classes FILE]`
    assert any(a.startswith("sweep lenet-bn-relu --val-split 5000 --epochs 5 --param") for a in by_text)  # `\`
    assert any(a.startswith("study lenet-batch-norm --seeds 0 1 2 --out /tmp/studies3") for a in by_text)  # env, nice
    assert any(a.startswith("train lenet --epochs 2 --out") for a in by_text)  # inside a for loop
    # a command in a block without a shell language would not be read above
    assert not [line for path in DOCS for line in unchecked_command_lines(path)]


@pytest.mark.parametrize(("place", "argv"), COMMANDS, ids=[place for place, _ in COMMANDS])
def test_documented_command_parses(place, argv):
    args = _parse(argv)
    if args is None:
        return
    try:
        _check_names(args)
        _check_train_settings(args)
    except CnnlabError as e:
        pytest.fail(f"{place}: cnnlab {shlex.join(argv)}\n  is refused: {e}")


@pytest.mark.parametrize(("line", "expected"), [
    ("cnnlab train lenet --epochs 1   # a comment --bogus", [["train", "lenet", "--epochs", "1"]]),
    ("OMP_NUM_THREADS=1 nice -n 5 cnnlab models", [["models"]]),
    ("for t in 1 2; do X=$t cnnlab train lenet --out thr$t; done", [["train", "lenet", "--out", "thr$t"]]),
    ("torchrun --nnodes=2 --rdzv-endpoint=HOST:29500 -m cnnlab train resnet18", [["train", "resnet18"]]),
    (".venv/bin/python -m cnnlab eval runs/.../best.pt", [["eval", "runs/.../best.pt"]]),
    ("cnnlab explore m.onnx --images FOLDER [--classes FILE]", [["explore", "m.onnx", "--images", "FOLDER",
                                                                  "--classes", "FILE"]]),
    ("python benchmarks/bench.py --quick   # cnnlab's figures", []),
    ("make train   # trains cnnlab's LeNet", []),
])
def test_lines_are_read_as_the_shell_reads_them(line, expected):
    assert cnnlab_commands(line) == expected


@pytest.mark.parametrize(("line", "needle"), [
    ("cnnlab train lenet --epochz 3", "unrecognized arguments"),       # a flag that does not exist
    ("cnnlab train lenet --epoch 3", "unrecognized arguments"),        # an abbreviation
    ("cnnlab train lenet --optimizer adagrad", "invalid choice"),      # a choice that is not valid
    ("cnnlab export runs/x/best.pt --format tflite --output m", "invalid choice"),
    ("cnnlab train lenet-tiny", "no model"),
    ("cnnlab train lenet --dataset svhn", "no dataset"),
    ("cnnlab study lenet-dropout", "no study"),
    ("cnnlab sweep lenet --param lr=gaussian:0:1", "lr=gaussian"),
    ("cnnlab train lenet --optimizer adam --momentum 0.9", "--momentum"),
    ("cnnlab train lenet --milestones 3,6", "--milestones"),
])
def test_a_documented_mistake_would_fail_this_test(line, needle):
    (argv,) = cnnlab_commands(line)
    with pytest.raises(pytest.fail.Exception, match=re.escape(needle)):
        test_documented_command_parses("example", argv)


# Inline `cnnlab WORD` spans that may name no command today, each with its reason.
_FORMER_COMMANDS = {
    ("docs/benchmarks.md", "bench"): "the driver that made the recorded figures, named as it was then; the text gives "
                                     "today's `benchmarks/bench.py` beside it",
}


def inline_commands() -> list[tuple[str, str, str]]:
    """(file, command word, flags text) of each inline code span of prose that begins `cnnlab WORD` (fragments such
    as `cnnlab train --resume` included: they are too partial to parse whole, but their command and flags exist)."""
    found = []
    for path in DOCS:
        prose = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S).replace("\n", " ")
        for span in re.findall(r"`([^`]+)`", prose):
            m = re.match(r"(?:\S+=\S+ )*(?:python -m )?cnnlab(?: --debug)? ([a-z][a-z0-9-]*)(.*)", span)
            if m:
                found.append((str(path.relative_to(ROOT)), m.group(1), m.group(2)))
    return found


def test_commands_and_flags_named_in_the_prose_exist():
    parser = _strict_parser()
    (commands,) = [a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    spans = inline_commands()
    assert len(spans) >= 50, len(spans)
    wrong = []
    for where, command, rest in spans:
        if command not in commands:
            if (where, command) not in _FORMER_COMMANDS:
                wrong.append(f"{where}: `cnnlab {command}` is no command")
            continue
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest):
            if flag not in commands[command]._option_string_actions:
                wrong.append(f"{where}: `cnnlab {command}` has no {flag}")
    assert not wrong, "\n".join(wrong)


# Flags of other tools that the prose names as theirs, each with its reason.
_OTHER_TOOLS_FLAGS = {
    "--reverse_input_channels": "OpenVINO's model converter, named beside OpenCV's blobFromImage in docs/explore.md",
}


def known_flags() -> set[str]:
    """Every flag a reader of the docs can type: cnnlab's (any command), torchrun's (from its own parser) and the
    benchmark scripts' (their `add_argument` calls)."""
    parser = _strict_parser()
    flags = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                flags |= set(command._option_string_actions)
    flags |= set(torchrun_parser()._option_string_actions)
    for script in (ROOT / "benchmarks").glob("*.py"):
        flags |= set(re.findall(r"add_argument\(\s*\"(--[a-z][\w-]*)\"", script.read_text(encoding="utf-8")))
    return flags


def inline_flags() -> list[tuple[str, str]]:
    """(file, flag) of each `--flag` in an inline code span of prose, alone (`--freeze-epochs`) or in a command; a
    family written `--limit-*` is no flag."""
    found = []
    for path in DOCS:
        prose = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S).replace("\n", " ")
        for span in re.findall(r"`([^`]+)`", prose):
            found += [(str(path.relative_to(ROOT)), flag)
                      for flag in re.findall(r"(?<![\w-])(--[a-z][\w-]*)(?![\w*-])", span)]
    return found


def test_every_flag_named_in_the_prose_is_one_a_reader_can_type():
    """A flag the prose names alone (`--freeze-epochs`, `--best-by`) is checked against no command line by the test
    above: renamed or removed, it would send a reader to a flag no parser knows."""
    flags = inline_flags()
    assert len(flags) >= 600, len(flags)
    assert ("README.md", "--best-by") in flags and ("docs/distributed.md", "--nproc-per-node") in flags
    known = known_flags()
    assert {"--epochs", "--nproc-per-node", "--quick"} <= known  # cnnlab's, torchrun's, benchmarks/bench.py's
    wrong = sorted({f"{where}: {flag}" for where, flag in flags
                    if flag not in known and flag not in _OTHER_TOOLS_FLAGS})
    assert not wrong, "\n".join(wrong)
    assert "--epoch" not in known and "--freeze-epoch" not in known  # an abbreviation or a typo is no flag here
