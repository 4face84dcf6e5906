"""Pengi: train, evaluate and use Pengi-style audio language models."""

__version__ = "0.1.0"
