"""Proposals: their states, the SQLite store, novelty, and the lifecycle that
moves them from submission to a recorded outcome."""
