"""Deployment across sites: certificates, compose topology, local TLS processes."""
