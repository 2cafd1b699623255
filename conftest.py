"""Shared by the core's and the plugins' tests.

Tests must not pick up whatever plugins happen to be installed: external plugins load only
when a test registers them itself (see ``tests/plugins``) or runs a subprocess that asks.
"""

import os

os.environ["CLM_LOAD_PLUGINS"] = ""
