"""Shared core: settings, database, logs, metrics, the CLI and the local stack."""
