"""The thinking cycle: model backends that propose actions (backends.py) and
the prompt they are given (prompt.py)."""
