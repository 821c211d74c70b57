"""Representations: frozen modules from mean-subtracted pixels to a layer's code."""
from .base import LayerInfo, Representation
from .registry import categories, get, layer_table, layers, models, resolve_auto

__all__ = ["LayerInfo", "Representation", "categories", "get", "layer_table", "layers", "models", "resolve_auto"]
