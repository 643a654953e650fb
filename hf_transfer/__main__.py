"""`python -m hf_transfer ...`: the same as the `hf-transfer` command."""

import sys

from hf_transfer.cli import main

if __name__ == "__main__":
    sys.exit(main())
