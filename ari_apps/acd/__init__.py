"""ACD queues: callers wait with music on hold until an agent the strategy chose answers."""
