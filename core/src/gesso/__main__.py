"""``python -m gesso`` runs the CLI."""

import sys

from gesso.cli import main

sys.exit(main())
