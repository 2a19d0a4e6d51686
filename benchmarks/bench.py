"""The benchmark driver: speed, accuracy and memory figures of the project, measured side by side in one run.

``python benchmarks/bench.py [--quick] [--only GROUP ...] [--out FILE.json]`` (run it with the venv's python from
a source checkout; nothing here ships in the package).

Every figure comes from separate programs run as subprocesses (``cnnlab train`` and the scripts in benchmarks/),
so each one pays its own start-up and none shares a warm process with another. The programs of one comparison
run round-robin, once per repeat, so a load spike on a shared machine hits all of them; a ratio is the median of
the per-repeat ratios. Each result row records the machine, the versions, the commit, the date, the load
average and the exact command (docs/benchmarks.md keeps the tables and says how to reproduce them).

Groups (``--only``): ``lenet`` (the book's LeNet recipe through cnnlab train, the d2l 1.0.3 Trainer, a
torchvision DataLoader loop and the seed cell on cnnlab.d2l), ``fast`` (test accuracy of the fast recipe on a
LeNet-class model within 60 s on 2 cores), ``cpu10`` (test accuracy of the cpu10 recipe within 10 minutes on 2
cores, and the seconds a shorter schedule takes to 92%), ``memory`` (peak resident memory), ``gpu`` (time to 94%
with the speedrun recipe and accuracy of the best recipe; both need a CUDA device), ``data-parallel`` (the book's LeNet
recipe in one process against two single-thread processes that each step half of the batch), ``peers`` (the book's
LeNet recipe through cnnlab train and through PyTorch Lightning, fastai and Keras 3 written as their docs show, then
the fast recipe's test accuracy against each peer's own best documented recipe in the same wall time; the peers run
in the virtualenv benchmarks/setup_peers_venv.sh makes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError

GROUPS = ("lenet", "fast", "cpu10", "memory", "gpu", "data-parallel", "peers")
# cpu10 (half an hour), data-parallel (a lever study) and peers (half an hour, another virtualenv) are asked for by name
DEFAULT_GROUPS = ("lenet", "fast", "memory", "gpu")
BENCHMARKS = Path(__file__).resolve().parent
D2L_PYTHON = Path("~/.cache/cnnlab/d2l-venv/bin/python").expanduser()  # made by benchmarks/setup_d2l_venv.sh
PEERS_PYTHON = Path("~/.cache/cnnlab/peers-venv/bin/python").expanduser()  # made by benchmarks/setup_peers_venv.sh
# The peers group's programs: the tool a user would pick instead of cnnlab, and its script in benchmarks/.
PEERS = {"PyTorch Lightning": "peer_lightning.py", "fastai": "peer_fastai.py", "Keras 3 on torch": "peer_keras.py"}


@dataclass
class Budget:
    """How long each figure runs. The defaults are the recorded figures'; ``QUICK`` is CI's smoke budget."""

    epochs: int = 10  # the book's LeNet recipe
    repeats: int = 3
    limit: int | None = None  # batches per split (smoke runs only)
    fast_model: str = "lenet-bn-relu"
    fast_epochs: int | None = None  # None: the fast recipe's own
    fast_seeds: tuple[int, ...] = (0, 1, 2)
    cpu10_model: str = "compact"
    cpu10_epochs: int | None = None  # None: the recipe's own
    cpu10_seeds: tuple[int, ...] = (0, 1, 2)
    to_target: float = 0.92
    to_target_epochs: int = 5  # the shorter cpu10 schedule timed to `to_target` test accuracy
    memory_batches: int = 2
    memory_batch_size: int = 128
    memory_probe_batch_size: int = 8  # small, so that the data, not the activations, would show at 28/96/224 px
    gpu_model: str = "resnet18"  # the speedrun and best recipes
    speedrun_target: float = 0.94
    speedrun_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    best_seeds: tuple[int, ...] = (0,)
    procs: int = 2  # data-parallel: processes of one thread each, splitting the book's batch of 128
    peer_max_epochs: int | None = None  # peers: a cap on the epochs a peer's best recipe is given (smoke runs)


QUICK = Budget(epochs=1, repeats=1, limit=2, fast_epochs=1, fast_seeds=(0,), cpu10_epochs=1, cpu10_seeds=(0,),
               to_target_epochs=1, memory_batches=1, memory_batch_size=8, speedrun_seeds=(0,), peer_max_epochs=1)


@dataclass
class Run:
    """One finished benchmark program: its result JSON (if it wrote one), its peak resident memory, its wall
    seconds from start to exit, and the 1-minute load average when it started."""

    result: dict[str, Any]
    max_rss_mib: float
    command: str
    seconds: float = 0.0
    load_at_start: float = 0.0


@dataclass
class Bench:
    """Runs the programs of a benchmark session in one scratch folder and collects the result rows."""

    budget: Budget
    data_dir: Path
    d2l_python: Path
    tmp: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    peers_python: Path = PEERS_PYTHON

    # ----------------------------------------------------------------------------------------- plumbing
    def run(self, name: str, argv: list[str], *, result: Path | None, env: dict[str, str] | None = None) -> Run:
        """Run ``argv`` to completion with its output in a log file; raise a one-line error if it fails.

        The peak RSS is the child's own (``os.wait4``), the per-process form of getrusage(RUSAGE_CHILDREN).
        """
        log = self.tmp / f"{name}.log"
        load, t0 = os.getloadavg()[0], time.perf_counter()
        with open(log, "wb") as out:
            child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, "MPLBACKEND": "Agg", **(env or {})})
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        if child.returncode != 0:
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            raise CnnlabError(f"benchmark program {name} failed (exit {child.returncode}): "
                              f"{lines[-1] if lines else 'no output'} (log: {log})")
        data = json.loads(result.read_text()) if result is not None else {}
        # Linux reports KiB. Under a launcher the peak is that of the largest process in the tree.
        return Run(data, usage.ru_maxrss / 1024, self.command(argv, env), seconds, round(load, 2))

    def command(self, argv: list[str], env: dict[str, str] | None = None) -> str:
        """The command as a person would type it: no interpreter path, no scratch folder."""
        words = ["python" if a == sys.executable else a for a in argv]
        if words[:3] == ["python", "-m", "torch.distributed.run"]:
            words = ["torchrun", *words[3:]]
        if words[:3] == ["python", "-m", "cnnlab"]:
            words = ["cnnlab", *words[3:]]
        text = shlex.join(words).replace(str(self.tmp), "$TMP").replace(str(BENCHMARKS.parent) + "/", "")
        text = text.replace(str(Path.home()), "~")
        return " ".join(f"{k}={v}" for k, v in (env or {}).items()) + (" " if env else "") + text

    def add(self, figure: str, value: float | None, unit: str, command: str, **detail: Any) -> None:
        # The load average when the row's last run ended: on a shared machine it says how much to trust a timing.
        self.rows.append({"figure": figure, "value": value, "unit": unit, **self.context, "command": command,
                          "load_avg_1m": round(os.getloadavg()[0], 2), "detail": detail})

    def train(self, name: str, model: str, recipe: str, *flags: str, env: dict[str, str] | None = None,
              device: str = "cpu", launcher: list[str] | None = None) -> Run:
        """``cnnlab train`` in its own process (under ``launcher``, e.g. torchrun, when given); its result.json."""
        out = self.tmp / "runs" / name
        argv = [*(launcher or [sys.executable]), "-m", "cnnlab", "train", model, "--recipe", recipe, *flags,
                "--device", device, "--data-dir", str(self.data_dir), "--out", str(out), "--quiet", "--no-report"]
        return self.run(name, argv, result=out / "result.json", env=env)

    def limit_flags(self, cnnlab: bool) -> list[str]:
        if self.budget.limit is None:
            return []
        n = str(self.budget.limit)
        return ["--limit-train-batches", n, "--limit-val-batches", n] if cnnlab else ["--limit", n]

    # -------------------------------------------------------------------------------------- figures
    def lenet(self) -> None:
        """The book's LeNet recipe through four programs, round-robin: images/s and test accuracy, and their ratios."""
        b = self.budget
        seed, common = str(BENCHMARKS / "seed_lenet.py"), [
            "--epochs", str(b.epochs), "--workdir", str(self.tmp), "--source", str(self.data_dir),
            *self.limit_flags(False)]
        programs: dict[str, Any] = {
            "cnnlab train": lambda r: self.train(f"cnnlab-train-{r}", "lenet", "book", "--epochs", str(b.epochs),
                                                 *self.limit_flags(True)),
            "DataLoader baseline": lambda r: self.script(f"dataloader-{r}", [
                sys.executable, str(BENCHMARKS / "dataloader_baseline.py"), *common]),
            "seed cell on cnnlab.d2l": lambda r: self.script(f"cnnlab-d2l-{r}", [
                sys.executable, seed, "--d2l", "cnnlab", *common]),
        }
        missing = {}
        if self.d2l_python.is_file():
            programs["seed cell on d2l 1.0.3"] = lambda r: self.script(f"d2l-book-{r}", [
                str(self.d2l_python), seed, "--d2l", "book", *common])
        else:
            missing["seed cell on d2l 1.0.3"] = (f"not measured: no d2l 1.0.3 virtualenv at {self.d2l_python} "
                                                 "(make one with benchmarks/setup_d2l_venv.sh)")
        runs = self.round_robin(programs)
        self.program_rows("lenet book", runs, missing)
        self.ratio("book LeNet recipe, images/s: cnnlab train / d2l 1.0.3 Trainer", runs, "cnnlab train",
                   "seed cell on d2l 1.0.3", target=">= 4x", missing=missing)
        self.ratio("book LeNet recipe, images/s: cnnlab train / DataLoader + torchvision transforms", runs,
                   "cnnlab train",
                   "DataLoader baseline", missing=missing)
        self.ratio("seed cell, images/s: cnnlab.d2l / d2l 1.0.3", runs, "seed cell on cnnlab.d2l",
                   "seed cell on d2l 1.0.3", target=">= 4x at the same accuracy", missing=missing)

    def round_robin(self, programs: dict[str, Any]) -> dict[str, list[Run]]:
        """Each program once per repeat, in turn, so that a load spike hits all of them; their runs by name."""
        runs: dict[str, list[Run]] = {name: [] for name in programs}
        for r in range(self.budget.repeats):
            for name, start in programs.items():
                runs[name].append(start(r))
        return runs

    def program_rows(self, prefix: str, runs: dict[str, list[Run]], missing: dict[str, str]) -> None:
        """Per program, the median images/s and test accuracy of its runs (every run kept); a note for each missing
        one."""
        b = self.budget
        for name, done in runs.items():
            speeds = [x.result["images_per_s"] for x in done]
            accs = [x.result["test_acc"] for x in done]
            common = dict(epochs=b.epochs, limit=b.limit, runs=len(done), wall_s=[x.result["wall_s"] for x in done])
            if "version" in done[0].result:
                common["version"] = done[0].result["version"]
            self.add(f"{prefix}: {name} images/s", statistics.median(speeds), "images/s", done[0].command,
                     images_per_s=speeds, **common)
            self.add(f"{prefix}: {name} test accuracy", statistics.median(accs), "accuracy", done[0].command,
                     test_acc=accs, **common)
        for name, note in missing.items():
            self.add(f"{prefix}: {name} images/s", None, "images/s", "", note=note)

    def script(self, name: str, argv: list[str]) -> Run:
        out = self.tmp / f"{name}.json"
        return self.run(name, [*argv, "--json-out", str(out)], result=out)

    def ratio(self, figure: str, runs: dict[str, list[Run]], ours: str, theirs: str, *, target: str = "",
              missing: dict[str, str]) -> None:
        if theirs in missing:
            self.add(figure, None, "x", "", note=missing[theirs], target=target)
            return
        pairs = list(zip(runs[ours], runs[theirs], strict=True))
        ratios = [a.result["images_per_s"] / b.result["images_per_s"] for a, b in pairs]
        self.add(figure, statistics.median(ratios), "x", f"{pairs[0][0].command}  vs  {pairs[0][1].command}",
                 ratios=ratios, target=target, test_acc={ours: [a.result["test_acc"] for a, _ in pairs],
                                                         theirs: [b.result["test_acc"] for _, b in pairs]})

    def fast(self) -> None:
        """Test accuracy a LeNet-class model reaches with the fast recipe in at most 60 s of wall time on 2 cores."""
        b = self.budget
        self.accuracy_within(b.fast_model, "fast", b.fast_epochs, b.fast_seeds, 60, "60 s", ">= 0.91")

    def accuracy_within(self, model: str, recipe: str, epochs: int | None, seeds: tuple[int, ...], limit_s: int,
                        limit: str, target: str) -> None:
        """One run of ``recipe`` per seed on 2 threads: the mean test accuracy, and whether every fit (validation
        included) took at most ``limit_s`` seconds."""
        flags = [*(["--epochs", str(epochs)] if epochs else []), *self.limit_flags(True)]
        done = [self.train(f"{recipe}-seed{s}", model, recipe, "--seed", str(s), *flags,
                           env={"OMP_NUM_THREADS": "2"}) for s in seeds]
        accs, walls = [x.result["test_acc"] for x in done], [x.result["wall_s"] for x in done]
        self.add(f"{model} --recipe {recipe}: test accuracy within {limit} on 2 cores (mean of {len(done)} seeds)",
                 statistics.fmean(accs), "accuracy", _for_any_seed(done[0], seeds[0]), seeds=list(seeds),
                 test_acc=accs, wall_s=walls, limit_s=limit_s, within_limit=max(walls) <= limit_s, target=target,
                 params=done[0].result.get("params"), epochs=done[0].result.get("epochs"))

    def cpu10(self) -> None:
        """The cpu10 recipe's test accuracy, one run per seed with the whole fit (validation included) within
        10 minutes on 2 cores; then the seconds a shorter schedule of the same recipe takes to ``to_target`` test
        accuracy (``--target-acc``: the fit stops there, result.json says when)."""
        b, model = self.budget, self.budget.cpu10_model
        self.accuracy_within(model, "cpu10", b.cpu10_epochs, b.cpu10_seeds, 600, "10 minutes", ">= 0.93")
        flags = ["--epochs", str(b.to_target_epochs), "--target-acc", str(b.to_target), *self.limit_flags(True)]
        timed = [self.train(f"to-target-seed{s}", model, "cpu10", "--seed", str(s), *flags,
                            env={"OMP_NUM_THREADS": "2"}) for s in b.cpu10_seeds]
        times = [x.result["time_to_target_s"] for x in timed]
        self.add(f"{model} --recipe cpu10 --epochs {b.to_target_epochs}: seconds to {b.to_target:.0%} test accuracy "
                 f"on 2 cores (median of {len(timed)} seeds)",
                 statistics.median(times) if None not in times else None, "s",
                 _for_any_seed(timed[0], b.cpu10_seeds[0]), seeds=list(b.cpu10_seeds), time_to_target_s=times,
                 test_acc=[x.result["test_acc"] for x in timed], target="<= 180 s",
                 **({} if None not in times else {"note": f"not reached by every seed: {times}"}))

    def memory(self) -> None:
        """Peak RSS of training at 224 (batch 128), and at 28/96/224 with a small batch to show the data
        are held once as uint8: a float32 copy of the training set would add the amounts in ``float_copy_mib``."""
        b = self.budget
        few = ["--epochs", "1", "--limit-train-batches", str(b.memory_batches), "--limit-val-batches", "1"]
        floor = self.run("memory-import", [sys.executable, "-c", "import cnnlab.train, cnnlab.models"], result=None)
        self.add("peak RSS, python importing cnnlab.train (floor)", floor.max_rss_mib, "MiB", floor.command)
        big = self.train("memory-vgg-small-224", "vgg-small", "book", "--batch-size", str(b.memory_batch_size), *few)
        self.add(f"peak RSS, cnnlab train vgg-small 224 batch {b.memory_batch_size}", big.max_rss_mib, "MiB",
                 big.command, batches=b.memory_batches, float_copy_mib=_float_copy_mib(224))
        for size in (28, 96, 224):
            run = self.train(f"memory-resnet18-{size}", "resnet18", "book", "--resize", str(size), "--batch-size",
                             str(b.memory_probe_batch_size), *few)
            self.add(f"peak RSS, cnnlab train resnet18 {size} batch {b.memory_probe_batch_size}", run.max_rss_mib,
                     "MiB", run.command, batches=b.memory_batches, float_copy_mib=_float_copy_mib(size))

    def gpu(self) -> None:
        """On a CUDA device: the time the speedrun recipe takes to ``speedrun_target`` test accuracy (mean over
        seeds), and the test accuracy of the best recipe.

        The speedrun runs one uncounted warm-up first, so that every counted run finds torch.compile's kernels in
        the inductor cache, as any run after a machine's first does; each counted time is the run's own fit wall
        time up to the evaluation that reached the target (``time_to_target_s``), compilation of its graphs
        included. Without a CUDA device the rows say "not measured". The smoke budget runs the same commands for one
        epoch of a few batches, on the CPU (without compiling) where there is no CUDA device, and its rows carry no
        figure.
        """
        b = self.budget
        probe = self.tmp / "cuda.json"
        self.run("cuda-probe", [sys.executable, "-c", "import json, torch; json.dump(torch.cuda.is_available(),"
                                f" open({str(probe)!r}, 'w'))"], result=None)
        cuda = json.loads(probe.read_text())
        speedrun_figure = f"{b.gpu_model} --recipe speedrun: seconds to {b.speedrun_target:.1%} test accuracy"
        best_figure = f"{b.gpu_model} --recipe best: test accuracy"
        quick = b.limit is not None
        if not cuda and not quick:
            for figure, goal in ((speedrun_figure, "<= 5 s (H100)"), (best_figure, ">= 0.955")):
                self.add(figure, None, "", "", note="not measured: no CUDA device on this machine", target=goal)
            return
        device, measured = ("cuda" if cuda else "cpu"), cuda and not quick
        # The smoke run keeps this path from rotting on either kind of machine; a CUDA one still compiles.
        smoke = ["--epochs", "1", *self.limit_flags(True), "--batch-size", "8",
                 *([] if cuda else ["--no-compile"])] if quick else []
        why = "the smoke budget (a CUDA" if cuda else "no CUDA device (a CPU"
        note = "" if measured else f"not measured: {why} smoke run of the same commands, 1 epoch, 2 batches)"
        if b.speedrun_seeds:  # an empty tuple leaves the figure out (a GPU lease too short for both)
            target = ["--target-acc", str(b.speedrun_target)]
            if measured:
                self.train("speedrun-warmup", b.gpu_model, "speedrun", *target, "--epochs", "1", device=device)
            speedrun = [self.train(f"speedrun-seed{s}", b.gpu_model, "speedrun", "--seed", str(s), *target, *smoke,
                                   device=device) for s in b.speedrun_seeds]
            times = [r.result["time_to_target_s"] for r in speedrun]
            missed = [s for s, t in zip(b.speedrun_seeds, times, strict=True) if t is None]
            self.add(speedrun_figure, statistics.fmean(times) if measured and not missed else None, "s",
                     _for_any_seed(speedrun[0], b.speedrun_seeds[0]), seeds=list(b.speedrun_seeds),
                     time_to_target_s=times, test_acc=[r.result["test_acc"] for r in speedrun],
                     wall_s=[r.result["wall_s"] for r in speedrun], epochs=[r.result["epochs"] for r in speedrun],
                     note=f"not reached by seed(s) {', '.join(map(str, missed))} within the recipe's epochs"
                     if measured and missed else note, target="<= 5 s (H100)")
        if b.best_seeds:
            best = [self.train(f"best-seed{s}", b.gpu_model, "best", "--seed", str(s), *smoke, device=device)
                    for s in b.best_seeds]
            accs = [r.result["test_acc"] for r in best]
            self.add(best_figure, statistics.fmean(accs) if measured else None, "accuracy",
                     _for_any_seed(best[0], b.best_seeds[0]), seeds=list(b.best_seeds), test_acc=accs,
                     wall_s=[r.result["wall_s"] for r in best], note=note, target=">= 0.955")

    def data_parallel(self) -> None:
        """The book's LeNet recipe in one process (the default threads) against ``procs`` processes of one thread
        that each step ``128 / procs`` images of the same global batch of 128 (gloo all-reduce on loopback),
        alternated. Rows: images/s of the fit (result.json), the whole command's wall seconds (start-up and the
        launcher included) and the load average at each run's start, every repeat kept."""
        b = self.budget
        flags = ["--epochs", str(b.epochs), *self.limit_flags(True)]
        one = "cnnlab train, 1 process"
        many = f"torchrun, {b.procs} processes x 1 thread, batch {128 // b.procs} each"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(b.procs)]
        programs = {
            one: lambda r: self.train(f"dp-one-{r}", "lenet", "book", *flags),
            many: lambda r: self.train(f"dp-many-{r}", "lenet", "book", *flags, "--batch-size", str(128 // b.procs),
                                       env={"OMP_NUM_THREADS": "1"}, launcher=launcher),
        }
        runs = self.round_robin(programs)
        for name, done in runs.items():
            speeds = [x.result["images_per_s"] for x in done]
            self.add(f"data-parallel lenet book: {name}, images/s", statistics.median(speeds), "images/s",
                     done[0].command, images_per_s=speeds, command_s=[round(x.seconds, 1) for x in done],
                     load_at_start=[x.load_at_start for x in done], test_acc=[x.result["test_acc"] for x in done],
                     world_size=done[0].result["world_size"], epochs=b.epochs, limit=b.limit)
        self.ratio(f"data-parallel lenet book, images/s: {b.procs} processes / 1 process", runs, many, one,
                   missing={})

    def peers(self) -> None:
        """The book's LeNet recipe through ``cnnlab train`` and through the peers' programs (benchmarks/peer_*.py,
        in the peers' virtualenv), round-robin: images/s and test accuracy, and cnnlab's ratio to each peer. Then
        the fast recipe against each peer's own best documented recipe in the same wall time
        (:meth:`peers_best`). Without the virtualenv the peers' rows say "not measured" and nothing else runs."""
        b = self.budget
        ours = "cnnlab train"
        programs: dict[str, Any] = {ours: lambda r: self.train(f"peers-cnnlab-{r}", "lenet", "book", "--epochs",
                                                               str(b.epochs), *self.limit_flags(True))}
        if not self.peers_python.is_file():
            note = (f"not measured: no peers virtualenv at {self.peers_python} "
                    "(make one with benchmarks/setup_peers_venv.sh)")
            for name in PEERS:
                self.add(f"peers, lenet book: {name} images/s", None, "images/s", "", note=note)
                self.ratio(f"peers, book LeNet recipe, images/s: cnnlab train / {name}", {}, ours, name,
                           missing={name: note})
                self.add(f"peers, test accuracy in the fast recipe's wall time: {name} (its best recipe)", None,
                         "accuracy", "", note=note)
            return
        for name in PEERS:
            programs[name] = lambda r, name=name: self.peer(name, f"book-{r}", "book", b.epochs, 0)
        runs = self.round_robin(programs)
        self.program_rows("peers, lenet book", runs, missing={})
        for name in PEERS:
            self.ratio(f"peers, book LeNet recipe, images/s: cnnlab train / {name}", runs, ours, name, missing={})
        self.peers_best()

    def peer(self, name: str, tag: str, recipe: str, epochs: int, seed: int,
             env: dict[str, str] | None = None) -> Run:
        """One peer program (``PEERS[name]``) with the peers' python; its result JSON."""
        script = Path(PEERS[name]).stem
        out = self.tmp / f"{script}-{tag}.json"
        argv = [str(self.peers_python), str(BENCHMARKS / PEERS[name]), "--recipe", recipe, "--epochs", str(epochs),
                "--seed", str(seed), "--workdir", str(self.tmp), "--source", str(self.data_dir),
                *self.limit_flags(False), "--json-out", str(out)]
        return self.run(f"{script}-{tag}", argv, result=out, env=env)

    def peers_best(self) -> None:
        """Per seed, ``cnnlab train`` with the fast recipe (as the fast group runs it, on 2 threads), then each
        peer's best documented recipe (``--recipe best``, peer_common.py) for as many epochs as fit in the wall time
        that fast run took: a 2-epoch calibration run of the peer times its first epoch and its second, and the
        peer gets ``1 + floor((budget - first) / second)`` epochs (:func:`_epochs_within`), as a user with a time
        budget would size a fixed schedule such as one-cycle. Rows: the mean test accuracy per program over the
        seeds, with each run's accuracy, wall seconds, epochs and budget."""
        b, env = self.budget, {"OMP_NUM_THREADS": "2"}
        fast = f"cnnlab train {b.fast_model} --recipe fast"
        done: dict[str, list[Run]] = {fast: [], **{name: [] for name in PEERS}}
        budgets, epochs = [], {name: [] for name in PEERS}
        flags = [*(["--epochs", str(b.fast_epochs)] if b.fast_epochs else []), *self.limit_flags(True)]
        for seed in b.fast_seeds:
            ours = self.train(f"peers-fast-seed{seed}", b.fast_model, "fast", "--seed", str(seed), *flags, env=env)
            done[fast].append(ours)
            budgets.append(ours.result["wall_s"])
            for name in PEERS:
                laps = self.peer(name, f"calibrate-seed{seed}", "best", 2, seed, env).result["epoch_end_s"]
                epochs[name].append(_epochs_within(ours.result["wall_s"], laps, b.peer_max_epochs))
                done[name].append(self.peer(name, f"best-seed{seed}", "best", epochs[name][-1], seed, env))
        for name, runs in done.items():
            accs, walls = [x.result["test_acc"] for x in runs], [x.result["wall_s"] for x in runs]
            label = name if name == fast else f"{name} (its best recipe)"
            self.add(f"peers, test accuracy in the fast recipe's wall time: {label}", statistics.fmean(accs),
                     "accuracy", _for_any_seed(runs[0], b.fast_seeds[0]), seeds=list(b.fast_seeds), test_acc=accs,
                     wall_s=walls, budget_s=budgets, epochs=[x.result["epochs"] for x in runs],
                     **({"version": runs[0].result["version"]} if "version" in runs[0].result else {}))


def _for_any_seed(run: Run, seed: int) -> str:
    """The command of a row measured over seeds, with its seed written as S."""
    return run.command.replace(f"--seed {seed}", "--seed S")


def _epochs_within(budget_s: float, laps: list[float], cap: int | None = None) -> int:
    """Epochs that fit in ``budget_s`` seconds, judged from a calibration run's epoch ends ``laps`` (seconds from
    the fit's start): the first epoch as it took (it pays the warm-up), each further one as the second took; at
    least 1, at most ``cap``."""
    first, each = laps[0], max(laps[1] - laps[0], 1e-9)
    epochs = max(1, 1 + int((budget_s - first) // each))
    return min(epochs, cap) if cap else epochs


def _float_copy_mib(size: int) -> float:
    """MiB of a float32 copy of the 60,000 training images resized to ``size`` x ``size``."""
    return 60_000 * size * size * 4 / 2**20


def environment(d2l_python: Path | None = None) -> dict[str, Any]:
    """The machine, versions, commit and date recorded beside every figure."""
    import torch
    import torchvision

    import cnnlab
    from cnnlab.runs.folder import git_commit

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    # A VM's model name ("AMD EPYC") hides the generation, and the same VM has run on hosts with and without
    # AVX-512 at very different speeds (docs/benchmarks.md): the vector ISA oneDNN dispatches to is recorded too.
    cpu += f" ({torch.backends.cpu.get_cpu_capability()})"
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "torchvision": torchvision.__version__, "cnnlab": cnnlab.__version__}
    if d2l_python is not None and d2l_python.is_file():
        versions["d2l"] = "1.0.3 (" + str(d2l_python).replace(str(Path.home()), "~") + ")"
    machine = f"{cpu}, {platform.machine()}, {platform.system()} {platform.release()}"
    if torch.cuda.is_available():
        machine += f"; GPU: {torch.cuda.get_device_name()}"
        versions["cuda"] = torch.version.cuda
    # A copy of the tree without its .git (a device machine's) is told its commit by whoever sent it.
    commit = git_commit() or os.environ.get("CNNLAB_BENCH_COMMIT")
    return {"machine": machine, "cpu_count": os.cpu_count(), "versions": versions, "commit": commit,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def run_benchmarks(budget: Budget | None = None, *, only: tuple[str, ...] = DEFAULT_GROUPS,
                   data_dir: str | None = None,
                   d2l_python: str | Path | None = None,
                   peers_python: str | Path | None = None) -> list[dict[str, Any]]:
    """Measure the figures of the groups in ``only``; returns the result rows (see the module docstring).

    Example:
        >>> rows = run_benchmarks(QUICK, only=("memory",))  # doctest: +SKIP
    """
    from cnnlab.data import resolve_data_dir
    from cnnlab.data.fashion_mnist import FILES

    unknown = sorted(set(only) - set(GROUPS))
    if unknown:
        raise CnnlabError(f"--only takes some of {', '.join(GROUPS)}; got {', '.join(unknown)}")
    d2l = Path(d2l_python).expanduser() if d2l_python else D2L_PYTHON
    source = Path(resolve_data_dir(data_dir))
    if not all((source / name).is_file() for name in FILES):
        raise CnnlabError(f"expected the four Fashion-MNIST .gz files in {source} (set --data-dir or $CNNLAB_DATA)")
    # The scratch folder (data copy, run folders, logs) is removed on success and kept when a program fails,
    # so that the log the error names is still there.
    tmp = Path(tempfile.mkdtemp(prefix="cnnlab-bench-"))
    bench = Bench(budget or Budget(), source, d2l, tmp, context=environment(d2l),
                  peers_python=Path(peers_python).expanduser() if peers_python else PEERS_PYTHON)
    for group in GROUPS:
        if group in only:
            getattr(bench, group.replace("-", "_"))()
    shutil.rmtree(tmp, ignore_errors=True)
    return bench.rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table: figure, value, unit, and the runs behind the value or why it is missing."""
    lines = ["| figure | value | unit | runs / note |", "| --- | ---: | --- | --- |"]
    for row in rows:
        value = row["value"]
        text = "—" if value is None else f"{value:,.0f}" if row["unit"] in ("images/s", "MiB") else f"{value:.4g}"
        lines.append(f"| {row['figure']} | {text} | {row['unit']} | {_describe(row['detail'])} |")
    return "\n".join(lines)


def _describe(d: dict[str, Any]) -> str:
    """The table's last column: the per-run values, the accuracies beside a ratio, the fast-recipe, memory and
    data-parallel context."""
    if d.get("note"):
        return d["note"]
    numbers = lambda values: ", ".join(f"{v:.4g}" for v in values)  # noqa: E731
    parts = []
    for key, label in (("ratios", "per repeat"), ("images_per_s", "runs"), ("time_to_target_s", "seconds per seed"),
                       ("test_acc", "runs")):
        if isinstance(d.get(key), list):
            parts.append(f"{label}: {numbers(d[key])}")
    if isinstance(d.get("test_acc"), dict):
        parts.append("test acc " + "; ".join(f"{name}: {numbers(v)}" for name, v in d["test_acc"].items()))
    if "command_s" in d:
        parts.append(f"whole command s: {numbers(d['command_s'])}; load average at start: "
                     f"{numbers(d['load_at_start'])}")
    if "budget_s" in d:
        parts.append(f"wall s: {numbers(d['wall_s'])}; epochs: {', '.join(map(str, d['epochs']))}; the fast run's "
                     f"wall s (the budget): {numbers(d['budget_s'])}")
    if "within_limit" in d:
        parts.append(f"wall s: {numbers(d['wall_s'])}; all within {d['limit_s']} s: "
                     f"{'yes' if d['within_limit'] else 'NO'}")
    if "float_copy_mib" in d:
        parts.append(f"a float32 copy of the training set at this size would be {d['float_copy_mib']:,.0f} MiB")
    if d.get("target"):
        parts.append(f"target {d['target']}")
    return "; ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench.py", description="Measure the speed, accuracy and memory figures "
                                     "of docs/benchmarks.md.")
    parser.add_argument("--quick", action="store_true", help="CI smoke budget: 1 epoch of 2 batches, one repeat")
    parser.add_argument("--out", metavar="FILE.json", help="also write the result rows here as JSON")
    parser.add_argument("--only", nargs="+", choices=GROUPS, default=list(DEFAULT_GROUPS),
                        help=f"figure groups to measure (default: {' '.join(DEFAULT_GROUPS)})")
    parser.add_argument("--epochs", type=int, help="LeNet epochs per program (default: the book's 10)")
    parser.add_argument("--repeats", type=int, help="runs of each LeNet program; the figure is the median (default 3)")
    parser.add_argument("--fast-epochs", type=int, help="epochs of the fast-recipe runs (default: the recipe's)")
    parser.add_argument("--speedrun-seeds", type=int, nargs="*", metavar="SEED",
                        help="seeds of the gpu group's speedrun runs (default 0 1 2 3 4; none leaves the figure out)")
    parser.add_argument("--best-seeds", type=int, nargs="*", metavar="SEED",
                        help="seeds of the gpu group's best-recipe runs (default 0; none leaves the figure out)")
    parser.add_argument("--procs", type=int, help="processes of the data-parallel group (default 2)")
    parser.add_argument("--data-dir", help="Fashion-MNIST folder (default: $CNNLAB_DATA, then the cache)")
    parser.add_argument("--d2l-python", help="python of a d2l 1.0.3 virtualenv (default: ~/.cache/cnnlab/d2l-venv)")
    parser.add_argument("--peers-python", help="python of the peers' virtualenv, made by "
                        "benchmarks/setup_peers_venv.sh (default: ~/.cache/cnnlab/peers-venv)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the groups asked for, print the table, write the rows as JSON when asked; exit code 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        budget = QUICK if args.quick else Budget()
        given = {k: v for k, v in dict(epochs=args.epochs, repeats=args.repeats, fast_epochs=args.fast_epochs,
                                       procs=args.procs).items() if v is not None}
        for name, value in given.items():
            if value < 1:
                raise CnnlabError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
        for name in ("speedrun_seeds", "best_seeds"):
            if getattr(args, name) is not None:
                given[name] = tuple(getattr(args, name))
        if 128 % given.get("procs", 2):
            raise CnnlabError(f"--procs must divide the book's batch of 128, got {given['procs']}")
        rows = run_benchmarks(replace(budget, **given), only=tuple(args.only), data_dir=args.data_dir,
                              d2l_python=args.d2l_python, peers_python=args.peers_python)
    except CnnlabError as e:
        print(f"bench.py: error: {' '.join(str(e).split())}", file=sys.stderr)  # one line, as the CLI's errors
        return 2
    if args.out:
        from cnnlab.io import write_json

        write_json(Path(args.out), rows)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
