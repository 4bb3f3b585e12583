"""`python -m prsm`: the `prsm` command."""

from prsm.cli import main

main()
