"""Deprecated alias of an internal module (mmkit-deprecated-shim); import from ``mmkit`` instead.

``mmkit.hookspecs`` was imported by plugins before the public API was declared (0.2). It re-exports the
public names and warns; it will be removed in 0.3 (docs/plugins.md, "Stability").
"""

import warnings

from mmkit._internal.hookspecs import *  # noqa: F403

warnings.warn("mmkit.hookspecs is internal since mmkit 0.2 and will be removed in 0.3: "
              "import the public names from `mmkit` instead", DeprecationWarning, stacklevel=2)
