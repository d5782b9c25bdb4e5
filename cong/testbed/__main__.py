"""The testbed build's own process (cong.testbed.build._build_apart): `python -m cong.testbed SETTINGS_JSON FOLDER`."""

import sys
from pathlib import Path

from cong.config import TestbedSettings
from cong.testbed.build import build_here

build_here(TestbedSettings.model_validate_json(sys.argv[1]), Path(sys.argv[2]), lambda line: print(line, flush=True))
