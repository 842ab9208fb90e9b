"""One mechanism for loss terms: the built-in terms and the ones added with ``loss.terms`` are built by one
loop from one list (:func:`fastnst.losses.term_weights`), and every report shows every term: the loss line,
fastnst.evaluate's table and JSON, its per-style table, fastnst.optimize's table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from fastnst.losses import LossInputs, LossTerm, PerceptualLoss, term_weights
from fastnst.losses.presets import describe_loss
from fastnst.tools.evaluate import main as evaluate_main
from fastnst.tools.optimize import main as optimize_main

from .conftest import TINY_LOSS


class EdgeTerm(LossTerm):
    """An added term for the tests: the mean absolute horizontal gradient of the output (edges), times a factor."""

    def __init__(self, factor: float = 1.0) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        x = inputs.output
        return (x[..., 1:] - x[..., :-1]).abs().mean() * self.factor


ADDED = {"edges": {"_target_": f"{__name__}.EdgeTerm", "weight": 2.0, "factor": 1.5}}


@pytest.fixture()
def preset(tmp_path: Path) -> Path:
    """A loss with every kind of term: the three built in, the stability term and an added one."""
    path = tmp_path / "every_term.yaml"
    path.write_text(yaml.safe_dump({**TINY_LOSS, "temporal_weight": 0.5, "terms": ADDED}))
    return path


def test_the_loss_builds_the_terms_term_weights_lists() -> None:
    for settings in ({}, {"tv_weight": 2.0}, {"temporal_weight": 0.5}, {"terms": ADDED, "temporal_weight": 1.0}):
        loss = PerceptualLoss(["relu2_1"], ["relu1_1"], vgg_weights="random", **settings)
        assert loss.weights == term_weights(settings) == term_weights(loss.settings())
        assert loss.term_names == list(term_weights(settings))
    assert list(term_weights({"terms": ADDED, "temporal_weight": 1.0})) == ["content", "style", "tv", "temporal", "edges"]
    line = describe_loss({**TINY_LOSS, "temporal_weight": 0.5, "terms": ADDED})
    assert line.endswith("weights content 1, style 1000, tv 1, temporal 0.5, edges 2")


def _row(text: str, name: str) -> list[str]:
    rows = [line.split() for line in text.splitlines() if line.split()[:1] == [name]]
    assert rows, f"no row {name!r} in:\n{text}"
    return rows[0]


def test_evaluate_reports_every_term(trained_ckpt: Path, style_path: Path, photo_dir: Path, preset: Path,
                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = sorted(photo_dir.glob("*.jpg"))[0]
    out_json = tmp_path / "r.json"
    assert evaluate_main(["--ckpt", str(trained_ckpt), "--style", str(style_path), "--images", str(one), "--size",
                          "48", "--preset", str(preset), "--json", str(out_json), "--device", "cpu", "-q"]) == 0
    text = capsys.readouterr().out
    summary = json.loads(out_json.read_text())["summary"]["model"]
    for term in ("content", "style", "tv", "temporal", "edges"):
        assert term in summary, term
        assert len(_row(text, term)) == 4  # name, mean, median, worst
    assert summary["edges"]["mean"] > 0 and summary["temporal"]["mean"] == 0  # no network to run outside training
    assert summary["total"]["mean"] == pytest.approx(sum(summary[t]["mean"] for t in term_weights(
        yaml.safe_load(preset.read_text()))), rel=1e-4)
    assert "total/content/style/tv/temporal/edges weighted as in training" in text
    assert "temporal 0.5, edges 2" in text  # the loss line


def test_the_per_style_report_shows_every_term(multi_ckpt: Path, photo_dir: Path, preset: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    one = sorted(photo_dir.glob("*.jpg"))[0]
    assert evaluate_main(["--ckpt", str(multi_ckpt), "--images", str(one), "--size", "48", "--preset", str(preset),
                          "--device", "cpu", "-q"]) == 0
    text = capsys.readouterr().out
    header = _row(text, "style")
    assert header[:7] == ["style", "total", "content", "style", "tv", "temporal", "edges"]
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("-----"))
    styles = [line.split() for line in lines[rule + 1:lines.index("", rule)]]
    assert len(styles) >= 2
    for row in styles:
        assert float(row[6]) > 0  # the added term's mean for this style, not '-'


def test_optimize_reports_every_term(style_path: Path, photo_dir: Path, preset: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.png"
    content = sorted(photo_dir.glob("*.jpg"))[0]
    assert optimize_main(["--content", str(content), "--style", str(style_path), "-o", str(out), "--steps", "3",
                          "--size", "32", "--preset", str(preset), "--device", "cpu", "-q"]) == 0
    text = capsys.readouterr().out
    assert _row(text, "step") == ["step", "total", "content", "style", "tv", "temporal", "edges"]
    report = json.loads(out.with_name("o.losses.json").read_text())
    assert report["terms"] == ["content", "style", "tv", "temporal", "edges"]
    assert report["final"]["edges"] > 0 and all("edges" in row for row in report["history"])
