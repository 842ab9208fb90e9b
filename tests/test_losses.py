import pytest
import torch

from fastnst.errors import UserError
from fastnst.losses import (
    LossInputs,
    LossTerm,
    PerceptualLoss,
    content_loss,
    gram_distance,
    gram_matrix,
    total_variation,
)
from fastnst.losses.vgg import VGG19_LAYERS, VGGFeatures


def test_gram_matrix_by_hand_both_normalisations() -> None:
    # One image, C=2, H=1, W=3: F = [[1, 2, 3], [0, 1, -1]]
    f = torch.tensor([[[[1.0, 2.0, 3.0]], [[0.0, 1.0, -1.0]]]])
    raw = torch.tensor([[14.0, -1.0], [-1.0, 2.0]])  # F @ F.T
    assert torch.allclose(gram_matrix(f, "hw")[0], raw / 3)
    assert torch.allclose(gram_matrix(f, "chw")[0], raw / 6)
    with pytest.raises(ValueError):
        gram_matrix(f, "bogus")  # type: ignore[arg-type]


def test_gram_is_fp32_under_autocast() -> None:
    f = torch.randn(2, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = gram_matrix(f.bfloat16())
    assert g.dtype == torch.float32
    assert torch.allclose(g, gram_matrix(f.bfloat16().float()), atol=1e-5)


def test_style_loss_zero_on_style_image_and_positive_elsewhere() -> None:
    style = torch.rand(1, 3, 48, 48)
    loss = PerceptualLoss(["relu2_1"], ["relu1_1", "relu2_1", "relu3_1"], vgg_weights="random", style_images=[style])
    terms = loss(style, style)
    assert terms["style"].item() == pytest.approx(0.0, abs=1e-7)
    assert terms["content"].item() == pytest.approx(0.0, abs=1e-7)
    other = loss(torch.rand(1, 3, 48, 48), style)
    assert other["style"].item() > 1e-6
    assert set(other) >= {"total", "content", "style", "tv", "style/relu1_1", "style/relu3_1"}


def test_gram_distance_broadcasts_one_target_over_the_batch() -> None:
    d = gram_distance(torch.stack([torch.ones(2, 2), torch.zeros(2, 2)]), torch.ones(1, 2, 2))
    assert d.tolist() == [0.0, 1.0]


def test_each_image_is_measured_against_its_own_style() -> None:
    """Several styles: targets are [S, C, C]; an image drawn with style i is at zero style loss on style i's
    image and positive on the others; the per-image values come back for per-style reports."""
    a, b = torch.rand(1, 3, 40, 40), torch.rand(1, 3, 40, 40) * 0.5
    loss = PerceptualLoss(["relu2_1"], ["relu1_1", "relu2_1"], vgg_weights="random", style_images=[a, b])
    assert loss.num_styles == 2 and loss.style_term.gram_relu1_1.shape == (2, 64, 64)
    x = torch.cat([a, b])
    same = loss(x, x, styles=torch.tensor([0, 1]))
    assert same["style"].item() == pytest.approx(0.0, abs=1e-7)
    swapped = loss(x, x, styles=torch.tensor([1, 0]), per_image=True)
    assert swapped["style_per_image"].shape == (2,) and (swapped["style_per_image"] > 1e-6).all()
    # style None means style 0 for every image
    assert loss(a, a)["style"].item() == pytest.approx(0.0, abs=1e-7)


class ConstantTerm(LossTerm):
    """An added term for the test: the mean of the output, times a factor."""

    vgg_layers = ("relu1_2",)

    def __init__(self, factor: float = 1.0) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        assert "relu1_2" in inputs.features  # the composer computed the layer the term asked for
        return inputs.output.mean() * self.factor


def test_an_added_term_is_weighted_summed_named_and_in_the_settings() -> None:
    style = torch.rand(1, 3, 32, 32)
    terms = {"brightness": {"_target_": f"{__name__}.ConstantTerm", "weight": 3.0, "factor": 2.0}}
    loss = PerceptualLoss(["relu2_1"], ["relu1_1"], tv_weight=0.5, vgg_weights="random", terms=terms,
                          style_images=[style])
    assert loss.term_names == ["content", "style", "tv", "brightness"]
    x = torch.rand(2, 3, 32, 32)
    out = loss(x, x)
    assert out["brightness"].item() == pytest.approx(3.0 * 2.0 * x.mean().item(), rel=1e-5)
    assert out["total"].item() == pytest.approx(sum(out[k].item() for k in loss.term_names), rel=1e-5)
    assert loss.settings()["terms"] == terms
    rebuilt = PerceptualLoss(**loss.settings(), style_images=[style])
    assert rebuilt.term_names == loss.term_names
    with pytest.raises(UserError, match="loss.terms.tv is a built-in term"):
        PerceptualLoss(["relu2_1"], ["relu1_1"], vgg_weights="random", terms={"tv": terms["brightness"]})
    with pytest.raises(UserError, match="loss.terms.x needs a _target_"):
        PerceptualLoss(["relu2_1"], ["relu1_1"], vgg_weights="random", terms={"x": {"weight": 1.0}})
    with pytest.raises(UserError, match="is not a fastnst.losses.LossTerm"):
        PerceptualLoss(["relu2_1"], ["relu1_1"], vgg_weights="random", terms={"x": {"_target_": "torch.nn.ReLU"}})


def test_tv_zero_on_constant_and_positive_on_noise() -> None:
    assert total_variation(torch.full((2, 3, 16, 16), 0.3)).item() == 0.0
    assert total_variation(torch.rand(2, 3, 16, 16)).item() > 0.01


def test_content_loss_is_mse() -> None:
    a, b = torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2, 2), 2.0)
    assert content_loss(a, b).item() == pytest.approx(4.0)


def test_vgg_named_layers_trimmed_frozen_and_not_persisted() -> None:
    vgg = VGGFeatures(["relu1_1", "conv3_1"], weights="random")
    assert len(vgg.features) == VGG19_LAYERS.index("conv3_1") + 1
    assert list(vgg.parameters()) == [] and vgg.state_dict() == {}
    vgg.train()
    assert not vgg.training
    out = vgg(torch.rand(1, 3, 32, 32))
    assert out["relu1_1"].shape == (1, 64, 32, 32) and out["conv3_1"].shape == (1, 256, 8, 8)
    assert (out["relu1_1"] >= 0).all() and (out["conv3_1"] < 0).any()


def test_random_vgg_is_identical_in_every_instance() -> None:
    torch.manual_seed(123)
    a = VGGFeatures(["relu2_1"], "random")
    torch.manual_seed(456)
    b = VGGFeatures(["relu2_1"], "random")
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(a(x)["relu2_1"], b(x)["relu2_1"])


def test_vgg_weight_errors_are_one_sentence(tmp_path, monkeypatch) -> None:
    with pytest.raises(UserError, match="unknown VGG19 layer"):
        VGGFeatures(["relu9_9"], "random")
    with pytest.raises(UserError, match="does not exist"):
        VGGFeatures(["relu1_1"], str(tmp_path / "missing.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_text("not a state dict")
    with pytest.raises(UserError, match="could not read VGG19 weights"):
        VGGFeatures(["relu1_1"], str(bad))

    from torchvision.models import VGG19_Weights

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(VGG19_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(UserError, match="could not download the VGG19 ImageNet weights.*loss.vgg_weights="):
        VGGFeatures(["relu1_1"], "imagenet")


def test_vgg_loads_a_local_weights_file(tmp_path) -> None:
    from torchvision.models import vgg19

    torch.manual_seed(7)
    full = vgg19(weights=None)
    path = tmp_path / "vgg19.pth"
    torch.save(full.state_dict(), path)
    vgg = VGGFeatures(["relu1_2"], str(path))
    assert torch.equal(vgg.features[0].weight, full.features[0].weight)
    wrapped = tmp_path / "wrapped.pth"  # a features-only state dict under a wrapper prefix
    torch.save({"state_dict": {f"module.vgg.{k}": v for k, v in full.features.state_dict().items()}}, wrapped)
    assert torch.equal(VGGFeatures(["relu1_2"], str(wrapped)).features[2].weight, full.features[2].weight)
