"""Networks the models are built from: MLP and conv backbones, strided residual stacks, the vector quantizer and the
gated PixelCNN."""

from vaelab.nn.backbones import ACTIVATIONS, BackboneConfig, build_decoder, build_encoder, resolve_backbone
from vaelab.nn.pixelcnn import GatedPixelCNN
from vaelab.nn.quantizer import QuantizerOutput, VectorQuantizer, perplexity, squared_distances

__all__ = [
    "ACTIVATIONS",
    "BackboneConfig",
    "GatedPixelCNN",
    "QuantizerOutput",
    "VectorQuantizer",
    "build_decoder",
    "build_encoder",
    "perplexity",
    "resolve_backbone",
    "squared_distances",
]
