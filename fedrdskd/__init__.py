"""fedrdskd: server-side data-free knowledge distillation for Flower."""

__version__ = "0.1.0"
