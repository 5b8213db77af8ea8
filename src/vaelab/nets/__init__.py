"""Encoder and decoder backbones shared by every model: an MLP and a convolutional pair."""

from vaelab.nets.backbones import ACTIVATIONS, BackboneConfig, build_decoder, build_encoder, resolve_backbone

__all__ = ["ACTIVATIONS", "BackboneConfig", "build_decoder", "build_encoder", "resolve_backbone"]
