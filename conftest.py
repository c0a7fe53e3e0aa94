"""Repository-level pytest configuration for mmdiag's own tests.

The plugin itself is registered through its ``pytest11`` entry point, and
``pytester`` through ``addopts`` in tox.ini, so that this file stays harmless
when pytest collects the built-in ``checks/`` of a source checkout from
another directory.
"""
