"""`python -m loraworks_cli` runs the client."""
import sys

from loraworks_cli.main import main

sys.exit(main())
