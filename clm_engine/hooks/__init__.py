"""The pluggy markers. A plugin writes ``from clm_engine import hookimpl``."""

import pluggy

hookspec = pluggy.HookspecMarker("clm_engine")
hookimpl = pluggy.HookimplMarker("clm_engine")

__all__ = ["hookimpl", "hookspec"]
