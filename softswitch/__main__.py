"""`python -m softswitch` is the `softswitch` command."""

from softswitch.cli import main

main()
