"""Intercom calls ring every device of the flat in parallel; the first answer wins."""
