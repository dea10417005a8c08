"""sarcodec: a learned codec for whole SAR scenes, with a tiled streaming PyTorch engine."""

__version__ = "0.1.0"
