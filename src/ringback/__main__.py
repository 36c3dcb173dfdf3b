"""`python -m ringback`: the `ringback` command, for when the console script is not on PATH."""

from ringback.cli import main

main(prog_name="ringback")
