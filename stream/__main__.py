"""`python -m livestems.stream` runs the CLI."""
import sys

from livestems.stream.cli.main import main

sys.exit(main())
