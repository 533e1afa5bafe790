"""Asterisk ARI (Stasis) applications: a runtime and one package per app."""
