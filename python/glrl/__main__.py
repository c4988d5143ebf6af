"""``python -m glrl`` runs the ``glrl`` command."""
import sys

from glrl.cli import main

sys.exit(main())
