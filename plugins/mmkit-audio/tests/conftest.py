"""Make ``mmkit_audio`` importable from a source checkout (no-op when the plugin is pip-installed)."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
