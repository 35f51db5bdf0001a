"""`python -m juno` runs the console script."""

from juno.entry import main

main()
