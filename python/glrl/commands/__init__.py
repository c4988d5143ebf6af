"""One module per ``glrl`` subcommand (see :mod:`glrl.cli`)."""
