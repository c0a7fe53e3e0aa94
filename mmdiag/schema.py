"""The results.json schema id (DESIGN.md §5): written by the report, checked when a baseline is read."""
SCHEMA = "mmdiag/1"
