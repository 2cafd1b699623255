"""Core behaviour, registered through the same hooks as any third-party plugin.

The list of modules is ``clm_engine.plugins.DEFAULT_PLUGINS``.
"""
