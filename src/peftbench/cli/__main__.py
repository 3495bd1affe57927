"""`python -m peftbench.cli`: the console entry point."""

from peftbench.cli import main

main()
