"""train.py as users type it: Hydra composition, presets, overrides, errors, DDP, wandb offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fastnst.training.config import build_module, instantiate

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if p.stem != "__init__")


def _compose(overrides: list[str]):
    from fastnst.training.hydra_checks import register_trainer_schema

    register_trainer_schema()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def run_train(args: list[str], cwd: Path = ROOT, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def tiny_args(photo_dir: Path, style_path: Path, run_dir: Path) -> list[str]:
    return [f"data.root={photo_dir}", f"style.image={style_path}", "loss.vgg_weights=random", "data.image_size=32",
            "data.batch_size=2", "data.num_workers=0", "data.val_count=2", "model=small", "model.num_residual=1",
            "trainer.accelerator=cpu", "trainer.enable_model_summary=false", "trainer.num_sanity_val_steps=0",
            "preview.every_n_steps=0", f"hydra.run.dir={run_dir}"]


GROUPS = ["data", "model", "loss", "optim", "trainer", "logger", "callbacks"]


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_preset_composes_and_instantiates(group, option, photo_dir, style_path, tmp_path) -> None:
    import pytorch_lightning as pl

    from fastnst.training.config import check_arguments

    cfg = _compose([f"{group}={option}", f"data.root={photo_dir}", f"style.image={style_path}",
                    "loss.vgg_weights=random"])
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    dm = instantiate(plain["data"], "data")
    dm.scan()
    module = build_module(plain)
    assert module.network.config()["channels"] == plain["model"]["channels"]
    assert set(module.loss_fn.style_layers) == set(plain["loss"]["style_layers"])
    if plain["logger"]:
        node = {**plain["logger"], "save_dir": str(tmp_path)}
        assert type(instantiate(node, "logger")).__name__ == plain["logger"]["_target_"].rsplit(".", 1)[1]
    check_arguments(pl.Trainer, plain["trainer"], "trainer")
    if plain["trainer"].get("accelerator") != "gpu":
        pl.Trainer(**plain["trainer"], logger=False)


def test_presets_cite_their_source() -> None:
    for path in (CONF / "loss").glob("*.yaml"):
        head = path.read_text().split("\n", 3)[:3]
        assert any("et al." in line or "pytorch/examples" in line for line in head), path
    gatys = yaml.safe_load((CONF / "loss" / "gatys.yaml").read_text())
    assert gatys["content_layers"] == ["relu4_2"]
    assert gatys["style_layers"] == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    assert gatys["gram_norm"] == "hw"


def test_any_trainer_argument_overrides_without_plus() -> None:
    cfg = _compose(["trainer.accelerator=cpu", "trainer.log_every_n_steps=1", "trainer.gradient_clip_val=0.5",
                    "trainer.precision=bf16-mixed", "trainer.max_steps=40000", "trainer.detect_anomaly=true"])
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.gradient_clip_val == 0.5 and cfg.trainer.detect_anomaly is True
    assert "logger" not in cfg.trainer and "callbacks" not in cfg.trainer  # owned by fastnst


def test_user_command_line_keys_compose() -> None:
    cfg = _compose(["data.root=/data/coco/train2014", "style.image=starry.jpg", "data.image_size=256",
                    "data.batch_size=4", "data.limit=1000", "loss.vgg_weights=imagenet", "loss.style_weight=5e10",
                    "seed=0", "trainer.max_steps=40000", "trainer.precision=bf16-mixed", "logger=csv",
                    "ckpt_path=last", "checkpoint.every_n_steps=100", "channels_last=true", "compile=true"])
    assert cfg.data.limit == 1000 and cfg.loss.style_weight == 5e10 and cfg.ckpt_path == "last"


@pytest.mark.parametrize("override, message", [
    ("data.imge_size=64", "data.imge_size is not a setting of data (valid: _target_, root, image_size,"),
    ("loss.gram_norm=cw", "loss.gram_norm='cw' is not valid; choose one of hw, chw"),
    ("trainer.max_steps=0", "trainer.max_steps=0 trains nothing"),
    ("model.upsample=bicubic", "model.upsample='bicubic' is not valid; choose one of nearest, transpose"),
])
def test_bad_override_is_one_line_and_status_2(override, message, photo_dir, style_path, tmp_path) -> None:
    """One case for each place a mistake is caught: composing the config, building the module, starting the run."""
    proc = run_train([*tiny_args(photo_dir, style_path, tmp_path / "run"), "trainer.max_steps=1", "logger=none",
                      override], timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastnst: error: ") and message in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize("override, message", [
    ("trainer.max_stpes=5", "trainer.max_stpes is not a setting of trainer (valid: "),
    ("trainer.max_steps=lots", "trainer.max_steps='lots' has the wrong type: expected integer"),
    ("model=big", "model=big is not an option of the model group; choose one of johnson, mobile, small"),
    ("a=b=c", "cannot read the command line"),
    ("hydra.run.dir=/proc/fastnst-test/run", "the run folder /proc/fastnst-test/run cannot be created or written"),
    # the model's and the data module's own checks, made before Hydra creates the run folder (issue 21.4)
    ("model.upsample=bicubic", "model.upsample='bicubic' is not valid; choose one of nearest, transpose"),
    ("model.channels=[8]", "model.channels must be 3 positive widths, one per resolution level"),
    ("model.num_residual=-1", "model.num_residual must be a whole number >= 0, got -1"),
    ("model.channels=[8,0,8]", "model.channels must be 3 positive widths"),
    ("data.num_workers=-1", "data.num_workers must be 0 (load in the training process) or more"),
    ("data.val_count=-2", "data.val_count must be 0 (no validation) or more"),
])
def test_command_line_mistakes_are_named_before_hydra_starts(override, message, photo_dir, style_path) -> None:
    from fastnst.training.hydra_checks import check_command_line

    problem = check_command_line([f"data.root={photo_dir}", f"style.image={style_path}", override], CONF)
    assert problem is not None and message in problem and "\n" not in problem


@pytest.mark.parametrize("key, value, message", [
    ("trainer.precision", "fp17", "trainer.precision='fp17' is not valid; choose one of 64, 32, 16, "),
    ("style.size", 0, "style.size=0 must be a number of pixels >= 16"),
    ("data.batch_size", "four", "data.batch_size='four' has the wrong type"),
    ("model", {"architecture": "mobile", "channels": [8], "stem_kernel": 3}, "model.channels must be 2 positive widths"),
    ("model", {"architecture": "mobile", "stem_kernel": 4}, "model.stem_kernel must be odd, got 4"),
    ("model", {"architecture": "mobile", "padding": "circular"}, "model.padding='circular' is not valid"),
    ("data.num_workers", -1, "data.num_workers must be 0"),
    ("data.batch_size", 11, "has 10 training images, fewer than data.batch_size=11 x 1 device(s)"),
])
def test_bad_values_are_named_before_training(key, value, message, photo_dir, style_path, tmp_path) -> None:
    from fastnst.errors import UserError
    from fastnst.training import fit

    from .conftest import tiny_config

    with pytest.raises(UserError) as err:
        fit(tiny_config(photo_dir, style_path, **{key: value}), tmp_path)
    assert message in str(err.value)
    if key in ("model", "data.num_workers"):  # settings are checked before the run folder is touched
        assert not (tmp_path / "checkpoints").exists()
    if key == "trainer.precision":
        assert "bf16-mixed" in str(err.value)
    assert not list(tmp_path.rglob("*.ckpt"))


def test_help_lists_every_group_option_and_nothing_internal() -> None:
    proc = run_train(["--help"], timeout=120)
    assert proc.returncode == 0
    assert "lightning_trainer" not in proc.stdout and "style.image=PAINTING" in proc.stdout
    for group in ("data", "model", "loss", "optim", "trainer", "logger", "callbacks", "hydra/launcher"):
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(f"{group}: "))
        listed = {o.strip() for o in line.split(":", 1)[1].split("(")[0].split(",")}
        assert listed == set(_options(group)), (group, listed)


def test_tiny_style_images_are_refused_or_warned(photo_dir, tmp_path) -> None:
    from PIL import Image

    from fastnst.errors import UserError
    from fastnst.media.image import load_style_image

    Image.new("RGB", (1, 1), (200, 30, 30)).save(tmp_path / "dot.png")
    Image.new("RGB", (600, 8), (200, 30, 30)).save(tmp_path / "strip.png")
    with pytest.warns(UserWarning, match="only 1x1 px and is upscaled to 512 px"):
        assert load_style_image(tmp_path / "dot.png", 512).shape == (1, 3, 512, 512)
    with pytest.raises(UserError, match="is 1x1 px; both sides need at least 16 px"):
        load_style_image(tmp_path / "dot.png", None)
    with pytest.raises(UserError, match="is 512x7 px at style size 512"):
        load_style_image(tmp_path / "strip.png", 512)


def test_missing_values_and_bad_paths_are_one_sentence(photo_dir, style_path, tmp_path) -> None:
    proc = run_train([f"hydra.run.dir={tmp_path / 'a'}", "logger=none"], timeout=120)
    assert proc.returncode == 2 and "Missing mandatory value" in proc.stderr and "Traceback" not in proc.stderr
    args = tiny_args(photo_dir, tmp_path / "nope.jpg", tmp_path / "b")
    proc = run_train([*args, "logger=none"], timeout=120)
    assert proc.returncode == 2 and f"style image {tmp_path / 'nope.jpg'} does not exist" in proc.stderr
    args = tiny_args(tmp_path / "no_photos", style_path, tmp_path / "c")
    proc = run_train([*args, "logger=none"], timeout=120)
    assert proc.returncode == 2 and f"data.root {tmp_path / 'no_photos'} does not exist" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr  # one line


def test_too_few_images_for_several_devices_is_said_once_before_any_rank_starts(photo_dir, style_path, tmp_path) -> None:
    """trainer.devices=3 on the CPU with 10 photos and batches of 4: checked before DDP starts the other ranks, so
    the sentence is printed once, on its own line (issue 21.14)."""
    args = [a for a in tiny_args(photo_dir, style_path, tmp_path / "run") if not a.startswith("data.batch_size")]
    proc = run_train([*args, "logger=none", "trainer.max_steps=1", "trainer.devices=3", "data.batch_size=4"],
                     timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    message = "has 10 training images, fewer than data.batch_size=4 x 3 device(s)"
    assert proc.stderr.count(message) == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("fastnst: error: data.root ")
    assert "Sanity Checking" not in proc.stderr


def test_launch_problems_are_one_sentence(photo_dir, style_path, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_train([*tiny_args(photo_dir, style_path, blocker / "run"), "logger=none"], timeout=120)
    assert proc.returncode == 2 and "the run folder" in proc.stderr and "cannot be created" in proc.stderr

    args = [a for a in tiny_args(photo_dir, style_path, tmp_path / "x") if not a.startswith("hydra.run.dir")]
    proc = run_train([*args, "logger=none"], env={"WORLD_SIZE": "2"}, timeout=120)
    assert proc.returncode == 2 and "pass the same hydra.run.dir" in proc.stderr
    args = [a for a in tiny_args(photo_dir, style_path, tmp_path / "gpu") if a != "trainer.accelerator=cpu"]
    proc = run_train([*args, "trainer=gpu", "trainer.max_steps=1", "logger=none"], timeout=120)
    assert proc.returncode == 2 and "the trainer settings are invalid" in proc.stderr and "Traceback" not in proc.stderr


def test_smoke_run_with_wandb_offline_leaves_last_ckpt_and_previews(photo_dir, style_path, tmp_path) -> None:
    run = tmp_path / "smoke"
    proc = run_train([*tiny_args(photo_dir, style_path, run), "trainer.max_steps=3", "preview.every_n_steps=2",
                      "logger=wandb"], env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    media = sorted((run / "wandb").rglob("offline-run-*/files/media/images/preview_*.png"))  # in the run folder
    assert media, "no preview image in the offline wandb run"
    assert (run / ".hydra" / "config.yaml").is_file()
    # The PNG wandb wrote has exactly the pixels of the preview file (it was all black when wandb got floats).
    import numpy as np
    from PIL import Image

    ours_files = sorted((run / "previews").glob("step_*.png"))
    media.sort(key=lambda p: int(p.name.split("_")[1]))  # wandb names them by its own history step
    assert len(media) == len(ours_files) >= 2
    for png, our_png in zip(media, ours_files):
        ours = np.asarray(Image.open(our_png).convert("RGB"))
        theirs = np.asarray(Image.open(png).convert("RGB"))
        assert theirs.shape == ours.shape and np.array_equal(theirs, ours), png
        assert theirs.max() > 1 and theirs.std() > 10  # a picture, not values 0 and 1


@pytest.mark.slow
def test_ddp_two_cpu_processes(photo_dir, style_path, tmp_path) -> None:
    run = tmp_path / "ddp"
    proc = run_train([*tiny_args(photo_dir, style_path, run), "trainer.max_steps=3", "trainer.devices=2",
                      "trainer.strategy=ddp", "logger=csv", "checkpoint.every_n_steps=3"], timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from fastnst.formats.checkpoint import read_checkpoint

    ckpt = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 3
    assert "world_size=2" in proc.stderr or "distributed_backend=gloo" in proc.stderr or "GLOBAL_RANK: 1" in proc.stderr


@pytest.mark.slow
def test_multirun_flag_may_follow_the_overrides(photo_dir, style_path, tmp_path) -> None:
    """``-m`` typed after the overrides (Hydra's own parser takes it only before them) still sweeps."""
    sweep = tmp_path / "sweep"
    args = [a for a in tiny_args(photo_dir, style_path, tmp_path / "unused") if not a.startswith("hydra.run.dir")]
    proc = run_train([*args, "-m", "trainer.max_steps=1", "logger=none", "loss.style_weight=1e3,2e3",
                      f"hydra.sweep.dir={sweep}"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.parent.parent.name for p in sweep.glob("*/checkpoints/last.ckpt")) == ["0", "1"]


@pytest.mark.slow
def test_sweep_of_two_jobs_with_the_submitit_local_launcher(photo_dir, style_path, tmp_path) -> None:
    """hydra-submitit-launcher's local executor: two jobs in their own processes and folders, each trained."""
    sweep = tmp_path / "sweep"
    args = [a for a in tiny_args(photo_dir, style_path, tmp_path / "unused") if not a.startswith("hydra.run.dir")]
    proc = run_train(["-m", "hydra/launcher=local", f"hydra.sweep.dir={sweep}", *args, "trainer.max_steps=2",
                      "logger=csv", "loss.style_weight=1e3,2e3"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from fastnst.formats.checkpoint import read_checkpoint, read_info

    weights = set()
    for job in ("0", "1"):
        ckpt = sweep / job / "checkpoints" / "last.ckpt"
        info = read_info(read_checkpoint(ckpt))
        assert info.training.global_step == 2
        weights.add(info.training.loss["style_weight"])
        assert (sweep / job / ".hydra" / "overrides.yaml").is_file()
    assert weights == {1e3, 2e3}
    assert list((sweep / ".submitit").rglob("*_result.pkl"))  # the jobs really went through submitit


def test_checking_the_model_settings_draws_no_random_numbers() -> None:
    """The check builds the network once; the run's own network must still start from the seed's weights."""
    import torch

    from fastnst.training.config import check_model

    before = torch.get_rng_state()
    check_model({"architecture": "johnson", "channels": [8, 16, 16], "num_residual": 1})
    assert torch.equal(before, torch.get_rng_state())
