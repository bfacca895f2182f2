"""``python -m inv_flow ...`` — the same as the ``inv-flow`` command."""

import sys

from inv_flow.cli import main

if __name__ == "__main__":
    sys.exit(main())
