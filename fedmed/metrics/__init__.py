"""Metrics: thin wrappers over sklearn / monai / torchmetrics, with federated sufficient statistics."""
