"""``python -m fedmed`` = the ``fedmed`` command."""

from fedmed.cli import main

main()
