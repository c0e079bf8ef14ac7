"""``python -m backchannel.cli`` (the tests and benchmarks run the CLI this way)."""

from backchannel.cli import main

main()
