"""``python -m segrefine.cli``: the same as the ``segrefine`` command."""

from . import main

main()
