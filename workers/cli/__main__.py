"""``python -m workers.cli``: the ``magnetiq`` command without the installed entry point."""

from workers.cli import main

main()
