"""The ``fastnst`` command and a regular (non-editable) install: the wheel holds every module and config file,
every subcommand runs and shows examples that parse, and an installed package trains from any folder."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from fastnst.commands import SUBCOMMANDS, main

from .conftest import ROOT

ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
OLD_ENTRY_POINTS = {"export", "optimize", "evaluate", "bench", "prepare", "info"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                        str(ROOT)], capture_output=True, text=True, timeout=600, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    (found,) = out.glob("fastnst-*.whl")
    return found


def test_the_wheel_holds_every_module_and_config_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "fastnst").rglob("*.py")}
    configs = {"fastnst/conf/" + p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml")}
    assert "fastnst/conf/hydra/launcher/slurm.yaml" in configs
    assert modules - names == set(), "list the missing packages in pyproject.toml"
    assert configs - names == set(), "list every folder of conf/ in pyproject.toml"
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "fastnst = fastnst.commands:main" in text
    assert all(f"fastnst-{name} = " in text for name in OLD_ENTRY_POINTS)


def test_the_wheel_holds_the_web_page(wheel: Path) -> None:
    from fastnst.web.site import PAGE_FILES

    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"fastnst/web/static/{name}" for name in PAGE_FILES} - names == set(), "fastnst.web's package data"


def test_help_lists_every_subcommand_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.split("commands:\n")[1].split("\n\n")[0].splitlines()]
    assert listed == list(SUBCOMMANDS)
    assert {"train", "stylize", "export", "evaluate", "optimize", "bench", "info", "prepare"} <= set(listed)


def test_an_unknown_command_is_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "'trian' is not a fastnst command; choose one of train, stylize" in err and "Traceback" not in err


@pytest.mark.parametrize("name", [n for n in SUBCOMMANDS if n != "train"])
def test_every_subcommand_help_has_examples_that_parse(name: str, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from fastnst import cli

    monkeypatch.setattr(cli, "_invoked_as", None)
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: fastnst {name} ")
    examples = out.split("examples:\n")[1].strip().splitlines()
    assert examples and all(line.strip().startswith(f"fastnst {name}") for line in examples)
    parser = importlib.import_module(SUBCOMMANDS[name].module).build_parser()
    for line in examples:
        argv = shlex.split(line, comments=True)[2:]
        parser.parse_args(argv)  # exits with status 2 on an example that does not parse


def test_train_help_names_both_commands() -> None:
    r = subprocess.run([sys.executable, "-m", "fastnst", "train", "--help"], capture_output=True, text=True,
                       timeout=120, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "fastnst train data.root=PHOTOS style.image=PAINTING" in r.stdout and "python train.py" in r.stdout
    assert "model: johnson, small, mobile" in r.stdout


@pytest.mark.slow
def test_an_installed_wheel_trains_and_stylizes_from_any_folder(wheel: Path, tmp_path: Path, photo_dir: Path,
                                                                 style_path: Path) -> None:
    """No checkout in sight: the package and its configs come from the installed wheel alone."""
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                       capture_output=True, text=True, timeout=600, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**ENV, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import fastnst.presets as p; print(p.__file__, p.CONF_DIR)"],
                           capture_output=True, text=True, cwd=work, env=env, timeout=120)
    assert where.stdout.split() == [str(site / "fastnst" / "presets.py"), str(site / "fastnst" / "conf")], where
    train = [sys.executable, "-m", "fastnst", "train", f"data.root={photo_dir}", f"style.image={style_path}",
             "loss.vgg_weights=random", "model=small", "data.image_size=32", "data.batch_size=2", "data.val_count=2",
             "style.size=64", "trainer.max_steps=2", "logger=csv", "hydra.run.dir=run"]
    r = subprocess.run(train, capture_output=True, text=True, cwd=work, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = work / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and (work / "run" / "train.log").is_file()
    r = subprocess.run([sys.executable, "-m", "fastnst", "stylize", "--ckpt", str(ckpt), str(photo_dir / "img_00.jpg"),
                        "-o", "out.png", "-q"], capture_output=True, text=True, cwd=work, env=env, timeout=300)
    assert r.returncode == 0 and (work / "out.png").is_file(), r.stderr[-3000:]
    # The SLURM launcher preset ships too (issue 21.5): Hydra composes it from the installed package data.
    r = subprocess.run([sys.executable, "-m", "fastnst", "train", "hydra/launcher=slurm", "--cfg", "hydra",
                        "--package", "hydra.launcher"], capture_output=True, text=True, cwd=work, env=env, timeout=300)
    assert r.returncode == 0 and "SlurmLauncher" in r.stdout, r.stderr[-3000:]


def test_pyproject_keeps_the_torch_range_that_admits_the_local_wheels() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = next(d for d in deps if d.startswith("torch>"))
    assert "<2.15" in torch, torch
