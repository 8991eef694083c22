"""fedmed: federated fine-tuning of medical-imaging foundation models on Flower."""

__version__ = "0.1.0"
