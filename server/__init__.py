"""livedrag: real-time collaborative drag-based editing on a StyleGAN2 image manifold."""

__version__ = "0.1.0"
