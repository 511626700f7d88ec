"""Measurements of released faces: metrics, sweeps and the adversaries of `latentpriv attack`."""
