"""Many styles in one network: the style draw, training from a list or a folder, per-style logs and previews,
exact resume, many tiny styles, bf16, errors, and adding a style to a trained network (old styles bit for bit)."""

from __future__ import annotations

import csv
import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastnst.errors import UserError
from fastnst.formats.checkpoint import load_network, read_checkpoint
from fastnst.models import StyleNorm
from fastnst.training import fit
from fastnst.training.config import build_module, style_list
from fastnst.training.draws import style_indices

from .conftest import MULTI_STYLES, make_pattern, multi_config, tiny_config
from .test_training import LossRecorder


def _onehot(i: int, n: int) -> torch.Tensor:
    w = torch.zeros(1, n)
    w[0, i] = 1.0
    return w


# --- the style draw -------------------------------------------------------------------------------

def test_style_draw_deals_every_style_equally_and_is_pure() -> None:
    s, b = 5, 3
    stream = torch.cat([style_indices(step, b, s, seed=7) for step in range(20)])  # 60 images = 12 decks
    for deck in stream.split(s):
        assert sorted(deck.tolist()) == list(range(s))  # every 5 consecutive images hold every style once
    assert torch.equal(style_indices(4, b, s, seed=7), style_indices(4, b, s, seed=7))  # resume draws the same
    assert not torch.equal(stream, torch.cat([style_indices(k, b, s, seed=8) for k in range(20)]))
    assert all(len(set(style_indices(k, 4, 8, 0).tolist())) == 4 for k in range(10))  # distinct within a batch
    # DDP ranks and accumulated micro-batches continue the same stream: two ranks of batch 2 = one of batch 4
    one = style_indices(3, 4, 6, seed=1)
    assert torch.equal(torch.cat([style_indices(3, 2, 6, 1, rank=r, world_size=2) for r in range(2)]), one)
    assert torch.equal(torch.cat([style_indices(3, 2, 6, 1, micro=m, accumulate=2) for m in range(2)]), one)
    assert torch.equal(style_indices(9, 4, 1, 0), torch.zeros(4, dtype=torch.long))
    counts = Counter(torch.cat([style_indices(k, 4, 64, 0) for k in range(64)]).tolist())
    assert set(counts) == set(range(64)) and set(counts.values()) == {4}  # 64 styles, 256 images: 4 each


def test_style_norm_per_image_and_shared_styles_match_instance_norm() -> None:
    torch.manual_seed(0)
    norm = StyleNorm(6, 3)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.rand(4, 6, 9, 7)
    w = torch.softmax(torch.randn(4, 3), 1)
    loop = torch.cat([torch.nn.functional.instance_norm(x[i:i + 1], weight=w[i] @ norm.weight,
                                                        bias=w[i] @ norm.bias) for i in range(4)])
    assert torch.allclose(norm(x, w), loop, atol=1e-5)
    assert torch.allclose(norm(x.contiguous(memory_format=torch.channels_last), w), loop, atol=1e-5)
    assert torch.allclose(norm(x, w[:1]), norm(x, w[:1].expand(4, -1)), atol=1e-5)  # [1, S]: the whole batch
    onehot = _onehot(2, 3)
    ref = torch.nn.functional.instance_norm(x, weight=norm.weight[2], bias=norm.bias[2])
    assert torch.equal(norm(x, onehot), ref)  # a pure style is exactly that style's parameters
    with pytest.raises(ValueError, match=r"\[N, 3\] or \[1, 3\]"):
        norm(x, torch.ones(4, 2))


# --- configs and errors ---------------------------------------------------------------------------

def test_style_list_from_a_list_a_folder_and_its_errors(style_dir: Path, tmp_path: Path) -> None:
    paths, names = style_list({"images": str(style_dir)})
    assert names == list(MULTI_STYLES) and paths == [str(style_dir / f"{n}.png") for n in MULTI_STYLES]
    paths, names = style_list({"images": [str(style_dir / "waves.png"), str(style_dir / "checker.png")]})
    assert names == ["waves", "checker"]  # a list keeps its order
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    make_pattern("dots").save(tmp_path / "a" / "x.png")
    make_pattern("waves").save(tmp_path / "b" / "x.jpg")
    with pytest.raises(UserError, match=r"style images .*a/x.png and .*b/x.jpg have the same name 'x'"):
        style_list({"images": str(tmp_path)})
    with pytest.raises(UserError, match="both set"):
        style_list({"image": "a.jpg", "images": ["b.jpg"]})
    with pytest.raises(UserError, match="style.name names a single style"):
        style_list({"images": ["a.jpg", "b.jpg"], "name": "x"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="contains no images"):
        style_list({"images": str(tmp_path / "empty")})


def test_an_unreadable_painting_is_named_before_training(photo_dir: Path, style_dir: Path, tmp_path: Path) -> None:
    paintings = tmp_path / "paintings"
    paintings.mkdir()
    for name in ("checker", "dots"):
        (paintings / f"{name}.png").write_bytes((style_dir / f"{name}.png").read_bytes())
    (paintings / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(UserError, match=r"style image .*broken.jpg is not a readable image"):
        fit(multi_config(photo_dir, paintings), tmp_path / "run")
    assert not list((tmp_path / "run").rglob("*.ckpt"))


# --- training -------------------------------------------------------------------------------------

def test_multi_style_run_logs_each_style_previews_every_style_and_rebuilds(photo_dir: Path, style_dir: Path,
                                                                           tmp_path: Path) -> None:
    cfg = multi_config(photo_dir, style_dir, logger={"_target_": "pytorch_lightning.loggers.CSVLogger",
                                                     "save_dir": None, "name": "csv"},
                       preview={"every_n_steps": 3, "num_images": 2},
                       **{"trainer.max_steps": 6, "trainer.val_check_interval": 3})
    result = fit(cfg, tmp_path)
    with open(tmp_path / "csv" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for name in MULTI_STYLES:  # 6 steps x 2 images = 12 draws, 4 per style: every style is logged
        assert any(r.get(f"train/style/{name}") for r in rows), name
        assert any(r.get(f"val/{name}/style") for r in rows), name
    previews = sorted((tmp_path / "previews").glob("*.png"))
    assert [p.name for p in previews] == ["step_0000003.png", "step_0000006.png"]
    single = fit(tiny_config(photo_dir, style_dir / "dots.png", preview={"every_n_steps": 2, "num_images": 2},
                             **{"trainer.max_steps": 2}), tmp_path / "single")
    assert single.global_step == 2
    h_multi = Image.open(previews[-1]).height
    h_single = Image.open(tmp_path / "single" / "previews" / "step_0000002.png").height
    assert h_multi == pytest.approx(h_single * 4 / 2, rel=0.1)  # photo row + 3 style rows vs photo + 1 style

    net, info = load_network(result.last_checkpoint)
    assert info.styles == list(MULTI_STYLES) and info.config["num_styles"] == 3
    assert info.training.style_images == [str(style_dir / f"{n}.png") for n in MULTI_STYLES]
    raw = read_checkpoint(result.last_checkpoint)["state_dict"]
    assert raw["loss_fn.terms.style.gram_relu1_1"].shape == (3, 64, 64)
    x = torch.rand(1, 3, 36, 44)
    with torch.no_grad():
        outs = [net(x, _onehot(i, 3)) for i in range(3)]
    assert all((a - b).abs().max() > 1e-4 for a, b in [(outs[0], outs[1]), (outs[1], outs[2])])


def test_preview_rows_are_a_fixed_sample_of_many_styles() -> None:
    from fastnst.training.callbacks import preview_styles

    assert preview_styles([0, 1, 2], 8) == [0, 1, 2]
    picked = preview_styles(list(range(40)), 8)
    assert len(picked) == 8 and picked == sorted(picked) and picked == preview_styles(list(range(40)), 8)


@pytest.mark.usefixtures("one_thread")
def test_multi_style_resume_is_exact_and_refuses_another_style_list(photo_dir: Path, style_dir: Path,
                                                                     tmp_path: Path) -> None:
    straight = LossRecorder()
    fit(multi_config(photo_dir, style_dir, **{"trainer.max_steps": 8, "checkpoint.every_n_steps": 5}),
        tmp_path / "a", callbacks=[straight])
    fit(multi_config(photo_dir, style_dir, **{"trainer.max_steps": 5, "checkpoint.every_n_steps": 5}), tmp_path / "b")
    resumed = LossRecorder()
    fit(multi_config(photo_dir, style_dir, ckpt_path="last", **{"trainer.max_steps": 8, "checkpoint.every_n_steps": 5}),
        tmp_path / "b", callbacks=[resumed])
    assert sorted(resumed.losses) == [6, 7, 8]
    for step in (6, 7, 8):
        assert math.isclose(resumed.losses[step], straight.losses[step], rel_tol=1e-5, abs_tol=1e-6), step
    two = [style_dir / "dots.png", style_dir / "checker.png"]
    with pytest.raises(UserError, match=r"trained on the styles \['checker', 'dots', 'waves'\], the config gives "
                                        r"\['dots', 'checker'\]"):
        fit(multi_config(photo_dir, two, ckpt_path="last", **{"trainer.max_steps": 9}), tmp_path / "b")


def test_bf16_mixed_multi_style_training(photo_dir: Path, style_dir: Path, tmp_path: Path) -> None:
    rec = LossRecorder()
    result = fit(multi_config(photo_dir, style_dir, channels_last=True,
                              **{"trainer.max_steps": 3, "trainer.precision": "bf16-mixed"}), tmp_path, callbacks=[rec])
    assert len(rec.losses) == 3 and all(math.isfinite(v) for v in rec.losses.values())
    net, info = load_network(result.last_checkpoint)
    assert info.num_styles == 3 and net.inp[2].weight.dtype == torch.float32


def test_sixty_four_tiny_styles_train_and_report_their_memory(photo_dir: Path, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "paintings"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(64):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"s{i:02d}.png")
    seed_layers = multi_config(photo_dir, folder, style={"size": 16})
    seed_layers["loss"]["style_layers"] = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    with caplog.at_level(logging.INFO):
        module = build_module(seed_layers)
    per_style = (64 ** 2 + 128 ** 2 + 256 ** 2 + 2 * 512 ** 2) * 4  # 2.4 MB at the seed text's layers
    assert module.target_bytes == 64 * per_style
    assert "style targets of 64 styles take 156 MB (2.44 MB per style" in caplog.text
    del module

    result = fit(multi_config(photo_dir, folder, style={"size": 16}, **{"trainer.max_steps": 2}), tmp_path / "run")
    net, info = load_network(result.last_checkpoint)
    assert info.num_styles == 64 and info.styles[:2] == ["s00", "s01"]
    assert net.inp[2].weight.shape == (64, 8)  # TINY_MODEL's first width, one row per style
    import fastnst

    model = fastnst.load(result.last_checkpoint)
    outs = model.stylize_each(np.zeros((20, 24, 3), np.uint8) + 128)
    assert len(outs) == 64 and all(o.shape == (20, 24, 3) for o in outs.values())


# --- a new style for a trained network ------------------------------------------------------------

def _add_style(photo_dir: Path, base: Path, painting: Path, **overrides) -> dict:
    cfg = multi_config(photo_dir, [painting], init_from=str(base), train_only="norm", **overrides)
    return cfg


@pytest.mark.usefixtures("one_thread")
def test_a_new_style_trains_only_its_norm_rows_and_keeps_old_styles_bit_for_bit(
        photo_dir: Path, multi_ckpt: Path, trained_ckpt: Path, tmp_path: Path, capsys) -> None:
    painting = tmp_path / "noise.png"
    make_pattern("noise").save(painting)
    result = fit(_add_style(photo_dir, multi_ckpt, painting, **{"trainer.max_steps": 4}), tmp_path / "run")
    old, old_info = load_network(multi_ckpt)
    new, info = load_network(result.last_checkpoint)
    assert info.styles == [*MULTI_STYLES, "noise"] and info.config["num_styles"] == 4
    assert info.training.trained_styles == ["noise"] and info.training.init_from == str(multi_ckpt)
    assert info.training.style_images == [*old_info.training.style_images, str(painting)]
    x = torch.rand(2, 3, 41, 37)
    with torch.no_grad():
        for i in range(3):
            assert torch.equal(old(x, _onehot(i, 3)), new(x, _onehot(i, 4)))  # bit for bit
        assert (new(x, _onehot(3, 4)) - old(x, _onehot(0, 3))).abs().max() > 1e-4
    before, after = old.state_dict(), new.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key][: value.shape[0]] if after[key].shape != value.shape else after[key], value), key
    norms = [k for k in after if after[k].dim() == 2 and after[k].shape[0] == 4]
    assert any(not torch.allclose(after[k][3], before[k].mean(0)) for k in norms)  # the new rows trained
    ckpt = read_checkpoint(result.last_checkpoint)
    assert len(ckpt["optimizer_states"][0]["state"]) == len(norms)  # only norm parameters in the optimizer
    assert ckpt["state_dict"]["loss_fn.terms.style.gram_relu1_1"].shape[0] == 1  # targets of the new style only
    assert ckpt["global_step"] == 4
    from fastnst.tools.info import main as info_main

    assert info_main([str(result.last_checkpoint)]) == 0
    assert f"added styles   noise (norm parameters only) to the network of {multi_ckpt}" in capsys.readouterr().out

    # Resuming such a run is exact, and a single-style network gets a second style the same way.
    fit(_add_style(photo_dir, multi_ckpt, painting, **{"trainer.max_steps": 2, "checkpoint.every_n_steps": 2}),
        tmp_path / "b")
    fit(_add_style(photo_dir, multi_ckpt, painting, ckpt_path="last", **{"trainer.max_steps": 4}), tmp_path / "b")
    resumed = read_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.allclose(resumed[f"network.{k}"], ckpt["state_dict"][f"network.{k}"], atol=1e-6) for k in norms)
    result = fit(_add_style(photo_dir, trained_ckpt, painting, **{"trainer.max_steps": 2}), tmp_path / "from_one")
    one, _ = load_network(trained_ckpt)
    two, info = load_network(result.last_checkpoint)
    assert info.styles == ["stripes", "noise"]
    with torch.no_grad():
        assert torch.equal(one(x), two(x, _onehot(0, 2)))


@pytest.mark.parametrize("case", ["no_init", "no_train_only", "other_network", "exported", "clash", "half",
                                  "missing"])
def test_adding_a_style_refuses_what_would_break_it(case: str, photo_dir: Path, multi_ckpt: Path, style_dir: Path,
                                                     tmp_path: Path) -> None:
    painting = tmp_path / "noise.png"
    make_pattern("noise").save(painting)
    cfg = _add_style(photo_dir, multi_ckpt, painting)
    expect = {
        "no_init": "train_only=norm trains new styles of a trained network; pass init_from",
        "no_train_only": "init_from adds styles .* pass train_only=norm too",
        "other_network": r"holds a johnson network .*\[8, 16, 16\].* but the config builds a johnson network "
                         r".*\[8, 16, 32\]",
        "exported": "is an exported model",
        "clash": r"the new style .*dots.png is named 'dots' like a style the network of init_from",
        "half": "would round the old styles' weights",
        "missing": "does not exist",
    }[case]
    if case == "no_init":
        cfg["init_from"] = None
    elif case == "no_train_only":
        cfg["train_only"] = None
    elif case == "other_network":
        cfg["model"] = {**cfg["model"], "channels": [8, 16, 32]}
    elif case == "exported":
        (tmp_path / "m.onnx").write_bytes(b"onnx")
        cfg["init_from"] = str(tmp_path / "m.onnx")
    elif case == "clash":
        cfg["style"]["images"] = [str(style_dir / "dots.png")]
    elif case == "half":
        cfg["trainer"]["precision"] = "bf16-true"
    elif case == "missing":
        cfg["init_from"] = str(tmp_path / "none.ckpt")
    with pytest.raises(UserError, match=expect):
        fit(cfg, tmp_path / "run")
    assert not list((tmp_path / "run").rglob("*.ckpt"))


# --- end to end, several processes ----------------------------------------------------------------

@pytest.mark.slow
def test_ddp_two_cpu_processes_train_three_styles(photo_dir: Path, style_dir: Path, tmp_path: Path) -> None:
    import json

    from .test_cli import run_train

    run = tmp_path / "ddp"
    args = [f"data.root={photo_dir}", f"style.images={style_dir}", "style.size=64", "loss.vgg_weights=random",
            "data.image_size=32", "data.batch_size=2", "data.num_workers=0", "data.val_count=2", "model=small",
            "model.num_residual=1", "trainer.accelerator=cpu", "trainer.enable_model_summary=false",
            "trainer.num_sanity_val_steps=0", "preview.every_n_steps=0", "trainer.max_steps=3", "trainer.devices=2",
            "trainer.strategy=ddp", "logger=csv", "trainer.log_every_n_steps=1", "checkpoint.every_n_steps=3",
            "+callbacks.probe={_target_: tests.ddp_probe.BufferProbe}", f"hydra.run.dir={run}"]
    proc = run_train(args, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 3 and ckpt["fastnst"]["styles"] == list(MULTI_STYLES)
    probes = [json.loads((run / f"probe_rank{r}.json").read_text()) for r in (0, 1)]
    for p in probes:
        assert p["world_size"] == 2 and p["wrapper"] == "DistributedDataParallel"
        assert p["module_buffers"] > 0 and p["broadcast_buffers"] == []  # VGG19 and the targets stay put
    with open(next((run / "csv").glob("version_*/metrics.csv"))) as f:
        header = f.readline()
    assert "train/loss" in header and any(f"train/style/{n}" in header for n in MULTI_STYLES)


@pytest.mark.slow
def test_compiled_multi_style_training_matches_eager(photo_dir: Path, style_dir: Path, tmp_path: Path) -> None:
    eager, compiled = LossRecorder(), LossRecorder()
    fit(multi_config(photo_dir, style_dir, **{"trainer.max_steps": 2}), tmp_path / "eager", callbacks=[eager])
    fit(multi_config(photo_dir, style_dir, compile=True, **{"trainer.max_steps": 2}), tmp_path / "compiled",
        callbacks=[compiled])
    assert sorted(compiled.losses) == [1, 2]
    for step in (1, 2):
        assert compiled.losses[step] == pytest.approx(eager.losses[step], rel=1e-3), step
    raw = read_checkpoint(tmp_path / "compiled" / "checkpoints" / "last.ckpt")["state_dict"]
    assert not any("_orig_mod" in k for k in raw)


@pytest.mark.slow
def test_train_py_and_infer_py_with_a_folder_of_paintings(photo_dir: Path, style_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from .conftest import ROOT
    from .test_cli import run_train

    run = tmp_path / "run"
    proc = run_train([f"data.root={photo_dir}", f"style.images={style_dir}", "style.size=64", "loss.vgg_weights=random",
                      "data.image_size=32", "data.batch_size=2", "data.num_workers=0", "data.val_count=2",
                      "model=small", "model.num_residual=1", "trainer.accelerator=cpu", "trainer.max_steps=3",
                      "logger=none", "preview.every_n_steps=0", f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = run / "checkpoints" / "last.ckpt"
    r = subprocess.run([sys.executable, str(ROOT / "infer.py"), "--ckpt", str(ckpt), str(photo_dir / "img_02.jpg"),
                        "-o", str(tmp_path / "out" / "p.png")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"p_{n}.png" for n in sorted(MULTI_STYLES)]
    r = subprocess.run([sys.executable, str(ROOT / "infer.py"), "--ckpt", str(ckpt), str(photo_dir / "img_02.jpg"),
                        "--style", "starry"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip() == ("fastnst: error: the model holds no style 'starry'; its styles "
                                                      "are checker, dots, waves")
    info = subprocess.run([sys.executable, "-m", "fastnst.info", str(ckpt)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert info.returncode == 0 and all(n in info.stdout for n in MULTI_STYLES), info.stdout
