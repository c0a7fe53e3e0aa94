"""Where the plugin keeps the run's state in ``config.stash`` (a module of its own so that the plugin's
hooks can find the session without importing torch at pytest start-up)."""
from __future__ import annotations

from typing import Any

import pytest

#: the run's :class:`mmdiag.session.MMSession`
SESSION_KEY = pytest.StashKey[Any]()
