"""Backbones: a registry of specs (see :mod:`labtf.backbones.registry`)."""
from labtf.backbones.registry import (BACKBONES, PREPROCESSING, BackboneSpec, get_backbone,
                                      get_pth_weights, register_backbone)

__all__ = ["BACKBONES", "PREPROCESSING", "BackboneSpec", "get_backbone", "get_pth_weights",
           "register_backbone"]
