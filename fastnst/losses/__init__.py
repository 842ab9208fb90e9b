"""Perceptual losses: the frozen VGG19 trunk (:mod:`.vgg`), loss terms as pure functions (:mod:`.terms`),
what a term module is (:mod:`.base`), the video stability term (:mod:`.temporal`), the composer returning
named, weighted terms (:mod:`.perceptual`) and the presets of ``conf/loss``
(:mod:`.presets`). Training and the tools use this package; inference and export never import it."""

from fastnst.losses.base import LossInputs, LossTerm
from fastnst.losses.perceptual import PerceptualLoss, term_weights
from fastnst.losses.terms import content_loss, gram_distance, gram_matrix, total_variation
from fastnst.losses.vgg import VGG19_LAYERS, VGGFeatures

__all__ = ["LossInputs", "LossTerm", "PerceptualLoss", "VGG19_LAYERS", "VGGFeatures", "content_loss", "gram_distance",
           "gram_matrix", "term_weights", "total_variation"]
