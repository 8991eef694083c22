"""Metrics with federated sufficient statistics (sums that pool across sites)."""
