"""``python -m clm_engine`` is the ``clm`` command."""

from .cli import cli

cli(prog_name="clm")
