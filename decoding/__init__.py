"""Decoding: how tokens are produced for a model call."""

from relaygraph.decoding.base import Decoder, DirectDecoder

__all__ = ["Decoder", "DirectDecoder"]
