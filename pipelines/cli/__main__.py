"""`python -m pipelines.cli`: the `cong` command."""

import sys

from pipelines.cli import main

sys.exit(main())
