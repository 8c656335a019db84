"""`python -m zart` is the `zart` command."""

from .cli import main

main()
