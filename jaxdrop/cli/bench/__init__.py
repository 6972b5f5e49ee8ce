"""``python -m jaxdrop bench``: side-by-side speed and memory ratios of jaxdrop against its peers.

``_run`` (command line, targets, report), ``_timing`` (alternating timer, machine info), ``_dropout`` (plain
dropout and memory sections), ``_models`` (variants, MC and transformer sections).
"""

from jaxdrop.cli.bench._run import SECTIONS, add_arguments, execute, main

__all__ = ["SECTIONS", "add_arguments", "execute", "main"]
