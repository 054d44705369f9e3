"""Reusable layers, each usable on its own with any timm model."""
from .cope import ComplexOrderPosEmbed, sinusoid_frequencies
