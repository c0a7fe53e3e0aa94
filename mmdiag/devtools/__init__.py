"""Developer tools that measure or rebuild parts of mmdiag; never imported by the pytest plugin.

* :mod:`mmdiag.devtools.bench`: ``python -m mmdiag.bench``, what a full mmdiag run
  costs over the model's bare forward pass (docs/performance.md).

Kept out of the plugin's import path so that a test session loads none of
them (``tests/test_devtools_isolated.py``).
"""
