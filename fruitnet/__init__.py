"""fruitnet: PyTorch Lightning + Hydra image-classification experiments."""

__version__ = "0.1.0"
