"""Calls towards an intercom panel, one at a time."""
