"""Execution: the sandbox and, on top of it, tools and the tool executor."""
