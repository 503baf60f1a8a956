"""pytest plugin of mmkit: the ``mmkit_registry`` fixture for plugin authors' tests.

mmkit registers this module with pytest through the ``pytest11`` entry point, so the fixture is
available in any test run where mmkit is installed. Without that entry point, import the fixture
into your test module (``from mmkit.testing_plugin import mmkit_registry``).

    def test_my_fusion_builds(mmkit_registry):
        import my_pkg.plugin
        mmkit_registry.register_plugin(my_pkg.plugin)
        fusion = mmkit_registry.create("fusion", "gated", context={"input_dims": {"image": 8}})

This module imports no torch, so loading it costs nothing.
"""

from __future__ import annotations

import pytest

from mmkit._internal.registry import Registry

__all__ = ["mmkit_registry"]


@pytest.fixture
def mmkit_registry(monkeypatch: pytest.MonkeyPatch) -> Registry:
    """An isolated, empty :class:`mmkit.Registry`: no entry points (built-ins included) and no
    ``MMKIT_PLUGINS``. Register just the plugins under test with ``register_plugin(module)`` or
    ``add_module("pkg.plugin")``. ``MMKIT_STRICT_PLUGINS`` is set, so a broken plugin raises."""
    monkeypatch.delenv("MMKIT_PLUGINS", raising=False)
    monkeypatch.setenv("MMKIT_STRICT_PLUGINS", "1")
    return Registry(entry_points=False, env=False)
