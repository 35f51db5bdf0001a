"""`python -m juno` runs the console script."""

from juno.cli import main

main()
