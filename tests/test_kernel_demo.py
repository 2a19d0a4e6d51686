"""cnnlab.kernel_demo: d2l 7.2.3-7.2.4 end to end (edge map, zero transpose, learned kernel, figure)."""

from __future__ import annotations

import re

import pytest
import torch

from cli_support import assert_one_line, file_appears_while_saving, run
from cnnlab.errors import CnnlabError
from cnnlab.kernel_demo import edge_image, kernel_figure, run_kernel_demo


def test_learns_the_edge_kernel_and_prints_like_the_book(capsys):
    state = torch.random.get_rng_state()
    result = run_kernel_demo()
    printed = capsys.readouterr().out
    assert torch.equal(torch.random.get_rng_state(), state)  # the seed did not leak into the caller's RNG
    losses = result["losses"]
    assert len(losses) == 10 and all(b < a for a, b in zip(losses, losses[1:], strict=False))
    assert losses[-1] < 0.1 * losses[0]
    torch.testing.assert_close(torch.tensor(result["kernel"]), torch.tensor([[1.0, -1.0]]), atol=0.1, rtol=0)
    assert result["transpose_is_zero"] is True and result["figure"] is None
    epochs = re.findall(r"^epoch (\d+), loss (\d+\.\d{3})$", printed, flags=re.M)
    assert [int(e) for e, _ in epochs] == [2, 4, 6, 8, 10]  # every second step, as the book prints
    assert [float(v) for _, v in epochs] == [round(losses[i], 3) for i in (1, 3, 5, 7, 9)]


def test_seeded_runs_repeat_and_other_seeds_differ(capsys):
    a, b, c = run_kernel_demo(seed=3), run_kernel_demo(seed=3), run_kernel_demo(seed=4)
    assert a["losses"] == b["losses"] and a["kernel"] == b["kernel"]
    assert a["losses"][0] != c["losses"][0]


def test_more_steps_get_closer(capsys):
    result = run_kernel_demo(steps=40)
    torch.testing.assert_close(torch.tensor(result["kernel"]), torch.tensor([[1.0, -1.0]]), atol=1e-3, rtol=0)


def test_writes_the_figure_atomically(tmp_path, capsys):
    out = tmp_path / "figs" / "kernel.png"
    result = run_kernel_demo(out=out)
    assert result["figure"] == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["kernel.png"]  # no temporary file left behind
    run_kernel_demo(out=str(tmp_path / "kernel.svg"))
    assert (tmp_path / "kernel.svg").read_text().lstrip().startswith("<?xml")


def test_figure_has_the_three_panels():
    X = edge_image()
    fig = kernel_figure(X, X[:, :7], torch.tensor([[1.0, -1.0]]))
    assert [ax.get_title() for ax in fig.axes][0].startswith("X")
    assert len(fig.axes) == 3


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(out="kernel.xyz"), r"expected an image file ending in one of .*\.png.*, got 'kernel.xyz'"),
    (dict(steps=0), r"expected steps to be a positive int, got 0"),
])
def test_bad_arguments(kwargs, message, tmp_path):
    with pytest.raises(CnnlabError, match=message):
        run_kernel_demo(**kwargs)


@pytest.mark.parametrize("force", [False, True])
def test_a_file_that_appears_at_out_while_the_figure_is_drawn_is_kept_without_force(force, tmp_path, capsys,
                                                                                      monkeypatch):
    out = tmp_path / "kernel.png"
    file_appears_while_saving(monkeypatch, out)
    code, err = run(["kernel", "--out", str(out), *(["--force"] if force else [])], capsys)
    if force:
        assert code == 0 and out.read_bytes().startswith(b"\x89PNG")
    else:
        assert_one_line(code, err, f"{out} appeared while it was being written", command="kernel")
        assert out.read_text() == "another program's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kernel.png"]  # no temporary file left
