"""`cnnlab study`: the shipped study files, the variant models they name, and a study run end to end."""

import json

import pytest
import torch
from torch import nn

import cnnlab.study.runner
from cli_support import assert_one_line, run, run_with_output
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model, model_info
from cnnlab.study import list_studies, load_study, run_study
from cnnlab.study.runner import _plan
from cnnlab.study.spec import parse_study
from cnnlab.study.summary import study_summary

SMOKE = dict(epochs=1, limit_train_batches=2, limit_val_batches=1, batch_size=32)


# ------------------------------------------------------------------------------------------ the study files
def test_the_book_exercises_ship_as_studies():
    assert {"lenet-activation-pooling", "lenet-kernel-channels", "lenet-batch-norm", "resnet-depth-width"} <= \
        set(list_studies())


@pytest.mark.parametrize("name", list_studies())
def test_every_study_is_valid_and_its_models_run(name):
    study = load_study(name)
    plan = _plan(study, {})  # every variant's settings through TrainConfig's checks
    assert list(plan) == [v.name for v in study.variants] and len(plan) >= 3
    for v in study.variants:
        size = model_info(v.model).input_size
        with torch.device("meta"):
            logits = create_model(v.model)(torch.zeros(2, 1, size, size))
        assert logits.shape == (2, 10)
        assert set(v.factors) == set(study.factors)
    levels = {f: {v.factors[f] for v in study.variants} for f in study.factors}
    assert all(len(values) >= 2 for values in levels.values()), levels  # each factor varies


@pytest.mark.parametrize("text, message", [
    ("title = 'x'\nvariants = []\n[budget]\n", "needs one or more [[variants]]"),
    ("title = 'x'\n[budget]\nepochs = 1\n", "lacks variants"),
    ("title = 'x'\n[budget]\nepoch = 1\n[[variants]]\nname = 'a'\nmodel = 'lenet'\n", "unknown key(s) epoch"),
    ("title = 'x'\n[budget]\nmodel = 'lenet'\n[[variants]]\nname = 'a'\nmodel = 'lenet'\n", "sets model"),
    ("title = 'x'\n[budget]\n[[variants]]\nname = 'a'\n", "expected model = \"NAME\""),
    ("title = 'x'\n[budget]\n[[variants]]\nname = '../a'\nmodel = 'lenet'\n", "usable as a folder name"),
    ("title = 'x'\n[budget]\n[[variants]]\nname = 'a'\nmodel = 'lenet'\n[[variants]]\nname = 'a'\nmodel = 'lenet'\n",
     "variant names must differ"),
    ("title = 'x'\nfactors = ['f']\n[budget]\n[[variants]]\nname = 'a'\nmodel = 'lenet'\n", "expected factors f"),
    ("title = 'x'\n[budget]\n[[variants]]\nname = 'a'\nmodel = 'lenet'\nseed = 1\n", "unknown key(s) seed"),
    ("title = [", "does not parse"),
    # A number among the factors was an internal error (TypeError joining them), a string was split into letters
    ("title = 'x'\nfactors = ['f', 3]\n[budget]\n[[variants]]\nname = 'a'\nmodel = 'lenet'\nfactors = { f = '1' }\n",
     "study file x.toml: factors must be a list of strings such as [\"activation\", \"pooling\"], got ['f', 3]"),
    ("title = 'x'\nfactors = 'act'\n[budget]\n[[variants]]\nname = 'a'\nmodel = 'lenet'\nfactors = { act = '1' }\n",
     "study file x.toml: factors must be a list of strings such as [\"activation\", \"pooling\"], got 'act'"),
])
def test_bad_study_files_get_one_line(text, message):
    with pytest.raises(CnnlabError) as info:
        parse_study(text, "x", "x.toml")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_unknown_study_names_the_known_ones():
    with pytest.raises(CnnlabError, match="unknown study 'lenet-pooling'; expected one of: lenet-activation-pooling"):
        load_study("lenet-pooling")


def test_a_flag_that_sets_what_the_study_varies_is_refused(tmp_path, capsys, monkeypatch):
    """--lr over lenet-batch-norm, whose variants set lr themselves, trained all six at the flag's lr, exit 0, and the
    summary said of lr "the levels tie". Budget flags (--epochs, --limit-*), which no variant sets, stay allowed."""
    monkeypatch.setattr(cnnlab.study.runner, "train", lambda *a, **k: pytest.fail("trained a refused study"))
    out = tmp_path / "s"
    assert_one_line(*run(["study", "lenet-batch-norm", "--epochs", "1", "--limit-train-batches", "2", "--lr", "0.5",
                          "--quiet", "--no-report", "--out", str(out)], capsys),
                    "--lr is what study lenet-batch-norm varies (1.0, 0.1 by variant), and would train every variant "
                    "at 0.5; expected no --lr", command="study")
    assert not out.exists()
    plan = _plan(load_study("lenet-batch-norm"), {"epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1})
    assert {s["epochs"] for s in plan.values()} == {1}


def test_flags_a_variant_would_not_use_are_refused_naming_the_variants(tmp_path, capsys, monkeypatch):
    """`cnnlab train` refuses --milestones under another schedule and --momentum with Adam (they do nothing); a study
    trained every variant with them, exit 0. A flag may do nothing for some variants only: they are named."""
    monkeypatch.setattr(cnnlab.study.runner, "train", lambda *a, **k: pytest.fail("trained a refused study"))
    out = tmp_path / "s"
    assert_one_line(*run(["study", "lenet-activation-pooling", "--milestones", "1,2", "--epochs", "1", "--quiet",
                          "--out", str(out)], capsys),
                    "study lenet-activation-pooling, every variant: --milestones applies to the multistep schedule, "
                    "and this run's is constant; expected --schedule multistep with it, or no --milestones",
                    command="study")
    path = tmp_path / "opt.toml"
    path.write_text("title = 'optimizer'\nfactors = ['optimizer']\n[budget]\nepochs = 1\n"
                    "[[variants]]\nname = 'sgd'\nmodel = 'lenet'\nfactors = { optimizer = 'sgd' }\n"
                    "[[variants]]\nname = 'adam'\nmodel = 'lenet'\nfactors = { optimizer = 'adam' }\n"
                    "config = { optimizer = 'adam', lr = 0.001 }\n")
    assert_one_line(*run(["study", str(path), "--momentum", "0.9", "--quiet", "--out", str(out)], capsys),
                    "study opt, variant adam: --momentum is SGD's and RMSprop's, and adam keeps its own running "
                    "moments", command="study")
    assert not out.exists()
    assert _plan(load_study(path), {"schedule": "multistep", "milestones": "1"})  # they apply to every variant


# ------------------------------------------------------------------------------------------ variant models
def _kinds(seq: nn.Sequential) -> list[str]:
    return [type(m).__name__ for m in seq]


def test_activation_and_pooling_variants():
    assert _kinds(create_model("lenet-sigmoid-max").features) == \
        ["Conv2d", "Sigmoid", "MaxPool2d", "Conv2d", "Sigmoid", "MaxPool2d"]
    assert _kinds(create_model("lenet-relu-avg").features) == ["Conv2d", "ReLU", "AvgPool2d", "Conv2d", "ReLU",
                                                               "AvgPool2d"]


def _lenet_params(k: int, c1: int, c2: int, pad: int) -> int:
    side = ((28 + 2 * pad - k + 1) // 2 - k + 1) // 2  # conv, 2x2 pool, conv, 2x2 pool (d2l 7.6)
    return (k * k + 1) * c1 + (c1 * k * k + 1) * c2 + (c2 * side * side + 1) * 120 + 121 * 84 + 85 * 10


@pytest.mark.parametrize("name, k, c1, c2", [
    ("lenet-relu", 5, 6, 16), ("lenet-relu-k3", 3, 6, 16), ("lenet-relu-k7", 7, 6, 16),
    ("lenet-relu-c3-8", 5, 3, 8), ("lenet-relu-c12-32", 5, 12, 32), ("lenet-relu-c24-64", 5, 24, 64),
])
def test_kernel_and_channel_variants(name, k, c1, c2):
    model = create_model(name)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == \
        [(1, c1, (k, k), (k // 2, k // 2)), (c1, c2, (k, k), (0, 0))]
    assert sum(p.numel() for p in model.parameters()) == _lenet_params(k, c1, c2, k // 2)
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_batch_norm_placements_differ_only_in_the_normalisation():
    before, after, none = (create_model(n) for n in ("lenet-bn", "lenet-bn-after", "lenet-bn-none"))
    assert _kinds(after.features) == ["Conv2d", "Sigmoid", "BatchNorm2d", "AvgPool2d"] * 2
    assert _kinds(after.classifier)[1:4] == ["Linear", "Sigmoid", "BatchNorm1d"]
    assert not any("BatchNorm" in k for k in _kinds(none.features) + _kinds(none.classifier))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(after) == count(before)
    bn_params = sum(p.numel() for m in before.modules() if "BatchNorm" in type(m).__name__ for p in m.parameters())
    assert count(none) == count(before) - bn_params  # the same convolutions and dense layers (BN-LeNet's shape)


def test_resnet_depth_and_width_variants():
    resnet10, half = create_model("resnet10"), create_model("resnet18-w0.5")
    assert [len(getattr(resnet10, f"b{i}")) for i in range(2, 6)] == [1, 1, 1, 1]
    assert [getattr(half, f"b{i}")[0].conv2.out_channels for i in range(2, 6)] == [32, 64, 128, 256]
    assert half.b2[0].conv3 is not None and half.b2[0].conv3.in_channels == 64  # the projection from the stem
    assert half.eval()(torch.zeros(2, 1, 96, 96)).shape == (2, 10)


@pytest.mark.parametrize("name", ["lenet-relu-k7", "lenet-bn-after", "lenet-bn-none", "resnet18-w0.25"])
def test_variants_on_scratch_ops_have_the_same_state_dict_keys(name):
    torch_keys = set(create_model(name).state_dict())
    assert set(create_model(name, ops="scratch").state_dict()) == torch_keys


# --------------------------------------------------------------------------------------------- end to end
def _smoke_flags() -> list[str]:
    return [part for k, v in SMOKE.items() for part in (f"--{k.replace('_', '-')}", str(v))]


@pytest.mark.slow
def test_activation_pooling_study_runs_end_to_end_and_resumes(tmp_path, data_dir, capsys):
    out = tmp_path / "study"
    argv = ["study", "lenet-activation-pooling", "--out", str(out), "--quiet", "--no-report",
            "--data-dir", str(data_dir), *_smoke_flags()]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    names = ["sigmoid-avg", "sigmoid-max", "relu-avg", "relu-max"]
    for name in names:
        result = json.loads((out / name / "result.json").read_text())
        assert result["status"] == "finished"
        assert json.loads((out / name / "config.json").read_text())["config"]["model"] == \
            next(v.model for v in load_study("lenet-activation-pooling").variants if v.name == name)
    table = (out / "table.md").read_text().splitlines()
    assert [line.split(" | ")[0].strip("| ") for line in table[2:]] == names
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# LeNet: activation x pooling (d2l 7.6 exercise 1)") and summary in printed
    assert "**activation**" in summary and "**pooling**" in summary and "Smoke budget" in summary
    assert "measured on the test set" in summary
    for name in names:
        assert name in summary.split("Ranking by final validation accuracy:")[1].splitlines()[0]

    stamps = {n: (out / n / "result.json").stat().st_mtime_ns for n in names}
    result = run_study("lenet-activation-pooling", out=out, overrides={**SMOKE, "data_dir": str(data_dir)},
                       quiet=True, report=False)
    assert result.ran == () and result.kept == tuple(names)  # finished variants are not rerun
    assert {n: (out / n / "result.json").stat().st_mtime_ns for n in names} == stamps

    with pytest.raises(CnnlabError, match="was started with other settings"):
        run_study("lenet-activation-pooling", out=out, overrides={**SMOKE, "epochs": 2}, quiet=True)


@pytest.mark.slow
def test_a_failing_variant_is_recorded_and_the_study_goes_on(tmp_path, data_dir):
    path = tmp_path / "lr.toml"
    path.write_text("title = 'lr'\nfactors = ['lr']\n[budget]\nepochs = 1\nlimit_train_batches = 4\n"
                    "batch_size = 32\nlimit_val_batches = 1\n"
                    "[[variants]]\nname = 'huge'\nmodel = 'lenet-bn-relu'\nfactors = { lr = '1e4' }\n"
                    "config = { lr = 1e30 }\n"
                    "[[variants]]\nname = 'book'\nmodel = 'lenet-bn-relu'\nfactors = { lr = '0.1' }\n")
    result = run_study(path, out=tmp_path / "s", overrides={"data_dir": str(data_dir)}, quiet=True, report=False)
    assert result.failed == ("huge",) and result.ran == ("book",)
    assert json.loads((tmp_path / "s" / "huge" / "result.json").read_text())["status"] == "failed"
    assert json.loads((tmp_path / "s" / "book" / "result.json").read_text())["status"] == "finished"
    assert "Failed (see their result.json): huge." in result.summary
    assert "Ranking by final validation accuracy: book" in result.summary


@pytest.mark.slow
def test_a_variant_refused_before_training_makes_the_study_exit_2(tmp_path, data_dir, capsys):
    """One variant's settings refused by a check (AlexNet at 28 px) while the other ran: the study exited 0 and its
    summary called the refused one "not finished yet (run the same command again to resume)", which would only be
    refused again."""
    path = tmp_path / "size.toml"
    path.write_text("title = 'size'\nfactors = ['model']\n[budget]\nepochs = 1\nlimit_train_batches = 2\n"
                    "batch_size = 32\nlimit_val_batches = 1\n"
                    "[[variants]]\nname = 'alexnet-28'\nmodel = 'alexnet'\nfactors = { model = 'alexnet' }\n"
                    "config = { resize = 28 }\n"
                    "[[variants]]\nname = 'lenet'\nmodel = 'lenet'\nfactors = { model = 'lenet' }\n")
    out = tmp_path / "s"
    code, printed, err = run_with_output(["study", str(path), "--out", str(out), "--quiet", "--no-report",
                                          "--data-dir", str(data_dir)], capsys)
    assert code == 2, (code, err)
    assert err == ["cnnlab study: error: 1 of the study's variants were refused before training (alexnet-28); see "
                   "their lines above"]
    assert "cnnlab study: variant alexnet-28 refused: input size 28 is too small for alexnet" in "\n".join(printed)
    assert not (out / "alexnet-28").exists()
    assert json.loads((out / "lenet" / "result.json").read_text())["status"] == "finished"
    summary = (out / "summary.md").read_text()
    assert "- Refused before training (change its settings): alexnet-28: input size 28 is too small" in summary
    assert "Not finished yet" not in summary


@pytest.mark.slow
def test_a_study_over_several_seeds_ranks_the_variants_by_their_mean(tmp_path, data_dir, capsys):
    """`--seeds 0 1`: every variant trains once per seed, in its own run folder with that seed, and the summary
    ranks the variants by their runs' mean with each one's range; one seed per variant was all a study ran, and its
    summary told the reader to rerun with other seeds and compare by hand."""
    path = tmp_path / "two.toml"
    path.write_text("title = 'two'\nfactors = ['act']\n[budget]\nepochs = 1\nlimit_train_batches = 3\n"
                    "batch_size = 32\nlimit_val_batches = 2\n"
                    "[[variants]]\nname = 'relu'\nmodel = 'lenet-relu'\nfactors = { act = 'relu' }\n"
                    "[[variants]]\nname = 'sigmoid'\nmodel = 'lenet'\nfactors = { act = 'sigmoid' }\n")
    out = tmp_path / "s"
    assert main(["study", str(path), "--out", str(out), "--quiet", "--no-report", "--data-dir", str(data_dir),
                 "--seeds", "0", "1"]) == 0
    names = ["relu-seed0", "relu-seed1", "sigmoid-seed0", "sigmoid-seed1"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == names
    acc = {}
    for name in names:
        assert json.loads((out / name / "config.json").read_text())["config"]["seed"] == int(name[-1])
        acc[name] = json.loads((out / name / "result.json").read_text())["test_acc"]
    summary = (out / "summary.md").read_text()
    means = {v: (acc[f"{v}-seed0"] + acc[f"{v}-seed1"]) / 2 for v in ("relu", "sigmoid")}
    assert f"relu {means['relu']:.4f}" in summary.split("Ranking by final validation accuracy: ")[1].splitlines()[0]
    assert "- 2 seeds per variant (0, 1): each variant's figure is the mean of its runs" in summary
    assert "seed 0, 1" in summary.split("Budget (every variant): ")[1].splitlines()[0]
    assert "One seed per variant" not in summary
    # The same command resumes; other seeds are another study folder's
    result = run_study(path, out=out, overrides={"data_dir": str(data_dir)}, quiet=True, report=False, seeds=[0, 1])
    assert result.ran == () and result.kept == tuple(names)
    with pytest.raises(CnnlabError, match="was started with other settings"):
        run_study(path, out=out, overrides={"data_dir": str(data_dir)}, quiet=True, seeds=[0, 2])


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0", "0"], "--seeds takes distinct whole numbers from 0, got 0 0"),
    (["--seeds", "-1", "2"], "--seeds takes distinct whole numbers from 0, got -1 2"),
    (["--seed", "1", "--seeds", "0", "1"], "--seed 1 and --seeds 0 1 both say which seed to run; expected one of them"),
])
def test_bad_seeds_are_one_line(argv, message, tmp_path, capsys):
    code, _, err = run_with_output(["study", "lenet-batch-norm", "--out", str(tmp_path / "s"), *argv], capsys)
    assert code == 2 and err == [f"cnnlab study: error: {message}"]
    assert not (tmp_path / "s").exists()


def test_several_seeds_say_whether_they_settle_the_order():
    """Ranked by the mean, two variants whose runs overlap are said not to be settled; apart, they are."""
    study = load_study("lenet-activation-pooling")

    def findings(figures: dict[str, list[float]]) -> list[str]:
        rows = [{"run": f"{v}-seed{s}", "status": "finished", "final_val_acc": a, "images_per_s": 100.0}
                for v, accs in figures.items() for s, a in enumerate(accs)]
        text = study_summary(study, {"epochs": 1, "seed": "0, 1, 2"}, rows, "| run |", seeds=[0, 1, 2])
        return text.split("## What the numbers say")[1].strip().splitlines()

    apart = findings({"sigmoid-avg": [0.70, 0.71, 0.72], "sigmoid-max": [0.74, 0.75, 0.73],
                      "relu-avg": [0.86, 0.87, 0.85], "relu-max": [0.89, 0.88, 0.90]})
    assert apart[0] == ("- Ranking by final validation accuracy: relu-max 0.8900 > relu-avg 0.8600 > sigmoid-max "
                        "0.7400 > sigmoid-avg 0.7100.")
    assert ("- 3 seeds per variant (0, 1, 2): each variant's figure is the mean of its runs; the widest range within "
            "a variant is 2.0 points (relu-max 0.8800-0.9000, relu-avg 0.8500-0.8700, sigmoid-max 0.7300-0.7500, "
            "sigmoid-avg 0.7000-0.7200).") in apart
    assert ("- Every run of relu-max beats every run of relu-avg (its lowest, 0.8800, above the other's highest, "
            "0.8700).") in apart
    close = findings({"sigmoid-avg": [0.70, 0.71, 0.72], "sigmoid-max": [0.74, 0.75, 0.73],
                      "relu-avg": [0.88, 0.87, 0.85], "relu-max": [0.89, 0.86, 0.90]})
    assert ("- relu-max and relu-avg overlap across the seeds (relu-max 0.8600-0.9000, relu-avg 0.8500-0.8800): 3 "
            "seeds do not settle which is better.") in close
    # a variant with a seed's run missing is not ranked on the others
    partial = findings({"sigmoid-avg": [0.70, 0.71], "sigmoid-max": [0.74, 0.75, 0.73],
                        "relu-avg": [0.86, 0.87, 0.85], "relu-max": [0.89, 0.88, 0.90]})
    assert "- Not ranked (not every seed's run scored): sigmoid-avg." in partial
    assert "- Not finished yet: sigmoid-avg-seed2 (run the same command again to resume)." in partial


def _findings(scores: list[float]) -> list[str]:
    """The summary's findings for lenet-activation-pooling's variants with these final validation accuracies."""
    study = load_study("lenet-activation-pooling")
    rows = [{"run": v.name, "status": "finished", "final_val_acc": a} for v, a in zip(study.variants, scores,
                                                                                      strict=True)]
    text = study_summary(study, {"epochs": 1}, rows, "| run |")
    return text.split("## What the numbers say")[1].strip().splitlines()


def _judged_findings(best_by: list[str]) -> list[str]:
    """The findings for variants judged by ``best_by`` each, whose accuracy and balanced accuracy rank them in
    opposite orders (as under --balance: what the balancing gains for the small classes it costs the large one)."""
    study = load_study("lenet-activation-pooling")
    rows = [{"run": v.name, "status": "finished", "best_by": b, "final_val_acc": 0.9 - 0.1 * i,
             "final_val_bal_acc": 0.5 + 0.1 * i} for i, (v, b) in enumerate(zip(study.variants, best_by, strict=True))]
    text = study_summary(study, {"epochs": 1}, rows, "| run |")
    return text.split("## What the numbers say")[1].strip().splitlines()


@pytest.mark.parametrize("best_by, ranking", [
    (["balanced-accuracy"] * 4, "balanced accuracy: relu-max 0.8000 > relu-avg 0.7000 > sigmoid-max 0.6000 > "
                                "sigmoid-avg 0.5000."),
    (["accuracy"] * 4, "accuracy: sigmoid-avg 0.9000 > sigmoid-max 0.8000 > relu-avg 0.7000 > relu-max 0.6000."),
    ([None] * 4, "accuracy: sigmoid-avg 0.9000 > sigmoid-max 0.8000 > relu-avg 0.7000 > relu-max 0.6000.")])
def test_the_summary_ranks_by_the_figure_the_variants_judge(best_by, ranking):
    # Under --balance the variants' best.pt judge the balanced accuracy, and the summary ranked them by accuracy; a
    # row without best_by is of a run from before it, which judged accuracy
    findings = _judged_findings(best_by)
    assert f"- Ranking by final validation {ranking}" in findings
    assert not [line for line in findings if line.startswith("- Note")]


@pytest.mark.parametrize("best_by, figure", [("balanced-accuracy", "balanced accuracy"), ("accuracy", "accuracy")])
def test_the_summary_names_the_figure_its_curves_draw(best_by, figure):
    # curves.png draws the figure the variants judge (compare.curves_overlay); the summary's picture said accuracy
    study = load_study("lenet-activation-pooling")
    rows = [{"run": v.name, "status": "finished", "best_by": best_by, "final_val_acc": 0.5, "final_val_bal_acc": 0.5}
            for v in study.variants]
    text = study_summary(study, {"epochs": 1}, rows, "| run |")
    assert f"![validation {figure} and training loss per epoch](curves.png)" in text


def test_variants_that_judge_different_figures_are_ranked_by_the_balanced_accuracy_and_told():
    findings = _judged_findings(["accuracy", "accuracy", "balanced-accuracy", "balanced-accuracy"])
    assert ("- Note: the variants judge their epochs by different figures (sigmoid-avg, sigmoid-max by accuracy; "
            "relu-avg, relu-max by balanced accuracy): ranked by the balanced accuracy, which accuracy would tilt "
            "toward the variants that do not balance their classes.") in findings
    assert "- Ranking by final validation balanced accuracy: relu-max 0.8000 > relu-avg 0.7000 > sigmoid-max " \
           "0.6000 > sigmoid-avg 0.5000." in findings



def test_variants_that_held_out_nothing_judge_no_figure_beside_those_that_balance():
    """A variant that held out nothing (--test-split 0 without --val-split) picks best.pt by no figure (its row's
    best_by is None): the note counted it among the variants judging the accuracy, against the balanced ones."""
    study = load_study("lenet-activation-pooling")
    rows = [{"run": v.name, "status": "finished", "best_by": None, "nothing_held_out": True, "final_val_acc": None,
             "final_val_bal_acc": None} for v in study.variants[:2]]
    rows += [{"run": v.name, "status": "finished", "best_by": "balanced-accuracy", "final_val_acc": 0.9 - 0.1 * i,
              "final_val_bal_acc": 0.5 + 0.1 * i} for i, v in enumerate(study.variants[2:])]
    text = study_summary(study, {"epochs": 1}, rows, "| run |")
    findings = text.split("## What the numbers say")[1].strip().splitlines()
    assert not [line for line in findings if line.startswith("- Note")], findings
    assert "- Ranking by final validation balanced accuracy: relu-max 0.6000 > relu-avg 0.5000." in findings
    assert "![validation balanced accuracy and training loss per epoch](curves.png)" in text

def test_the_summary_never_calls_one_of_two_equal_figures_greater():
    """Variants at chance read "0.1000 > 0.1000 > 0.1000" and "... leads ... by 0.0 points" before."""
    findings = _findings([0.1, 0.1 + 1e-7, 0.1 - 1e-7, 0.1])
    ranking = next(line for line in findings if line.startswith("- Ranking"))
    assert ranking.count(" = ") == 3 and ">" not in ranking, ranking
    assert "- No variant leads: all score 0.1000." in findings
    assert not [line for line in findings if "leads" in line and "No variant" not in line]
    for factor in ("activation", "pooling"):
        line = next(line for line in findings if line.startswith(f"- **{factor}**"))
        assert line.endswith("; the levels tie.") and " over " not in line, line
    # Ties and leads side by side, and a lead below 0.05 points is not printed as "+0.0".
    findings = _findings([0.84127, 0.84103, 0.84103, 0.841])
    ranking = next(line for line in findings if line.startswith("- Ranking"))
    assert ranking.count(" 0.8413 > ") == 1 and ranking.count(" 0.8410 = ") == 2, ranking
    assert "- sigmoid-avg leads relu-max by 0.03 points." in findings
    assert not [line for line in findings if "0.0 points" in line], findings


def test_a_factor_varied_one_at_a_time_is_compared_at_equal_other_factors():
    """lenet-kernel-channels varies the window at 6-16 channels and the channels at 5x5: the mean of every variant
    with a 5x5 window took in the wider nets, and the summary called the 5x5 window better by 0.3 points where at
    equal width the three windows tie within 0.03."""
    study = load_study("lenet-kernel-channels")
    scores = {"k3-c6-16": 0.8835, "k5-c6-16": 0.8833, "k7-c6-16": 0.8832, "k5-c3-8": 0.8739, "k5-c12-32": 0.8922,
              "k5-c24-64": 0.8962}
    rows = [{"run": v.name, "status": "finished", "final_val_acc": scores[v.name]} for v in study.variants]
    findings = study_summary(study, {"epochs": 1}, rows, "| run |").split("## What the numbers say")[1]
    assert "- **kernel**: 3x3 0.8835, 5x5 0.8833, 7x7 0.8832; 3x3 over 7x7: +0.03 points." in findings
    assert "- **channels**: 24-64 0.8962, 12-32 0.8922, 6-16 0.8833, 3-8 0.8739; 24-64 over 3-8: +2.2 points." \
        in findings
    # a full factorial study still means each level over all the others
    assert "- **activation**: relu 0.7000 (mean of 2), sigmoid 0.5000 (mean of 2); relu over sigmoid: +20.0 points." \
        in "\n".join(_findings([0.4, 0.6, 0.6, 0.8]))


def test_the_summary_says_which_split_the_accuracies_come_from(tmp_path):
    study = load_study("lenet-activation-pooling")
    rows = [{"run": v.name, "status": "finished", "final_val_acc": 0.5} for v in study.variants]
    for split in ("train", "val", "test"):
        (tmp_path / split).mkdir()
    said = {what: study_summary(study, budget, rows, "| run |").split("Accuracies are measured on ")[1].split(".")[0]
            for what, budget in (("book", {"epochs": 1}), ("split", {"epochs": 1, "val_split": 0.1}),
                                 ("val/", {"epochs": 1, "dataset": f"folder:{tmp_path}"}))}
    assert said == {"book": "the test set, as the book does (no val_split)", "split": "a held-out validation split",
                    "val/": "the folder's own validation split (val/)"}


def test_an_interrupted_study_says_once_how_it_resumes(monkeypatch, capsys):
    # The variant's trainer prints where the run stopped (stderr); the study added that same line again on stdout
    import signal

    import cnnlab.study
    from cnnlab.errors import Interrupted

    def interrupted(*args, **kwargs):
        raise Interrupted(signal.SIGINT, "SIGINT: stopped after epoch 1 of lenet")

    monkeypatch.setattr(cnnlab.study, "run_study", interrupted)
    assert main(["study", "lenet-activation-pooling"]) == 128 + signal.SIGINT
    out = capsys.readouterr().out
    assert out == "cnnlab study: the study resumes with the same command\n"
