"""``python -m b24gate`` is the ``b24gate`` command."""

from .cli import main

main()
