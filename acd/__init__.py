"""ACD queues as a Stasis app (see issue: ACD)."""
