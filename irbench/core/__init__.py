"""The floor of irbench: shared utilities that know nothing of datasets, methods or runs.

Frozen config dataclasses and their hashes (`config`), the content-addressed, resumable
artifact cache (`cache`), progress reporting (`progress`), process pools (`parallel`),
nearest-neighbour search backends (`search`), retrieval metrics (`metrics`) and the generic
name registry filled from entry points (`registry`). Every other package may import from
here; nothing here imports from them (only `irbench.errors`).
"""
