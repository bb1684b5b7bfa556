"""The example third-party runtime plugin loads through arbe's plugin registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from arbe_adapters.plugins import load_plugins
from arbe_core.runtime import RuntimeContext, SandboxSpec

pytest.importorskip(
    "arbe_example_runtime",
    reason="the example plugin is not installed: pip install -e tests/example_plugin",
)


def test_plugins_entry_point_name_loads_example() -> None:
    plugins = load_plugins("example")

    assert "example" in plugins.runtimes
    assert plugins.runtimes["example"].plugin == "example"
    assert "example" in plugins.plugin_names()
    assert "local" in plugins.runtimes


def test_plugins_empty_allow_list_skips_example() -> None:
    plugins = load_plugins("")

    assert "example" not in plugins.runtimes
    assert "example" not in plugins.plugin_names()


def test_plugins_unset_allow_list_loads_example() -> None:
    """None (ARBE_PLUGINS unset) loads every installed plugin."""
    plugins = load_plugins(None)

    assert "example" in plugins.runtimes


def test_plugins_registration_defers_runtime_import() -> None:
    """Loading the plugin does not import the runtime module behind it."""
    code = (
        "import sys\n"
        "from arbe_adapters.plugins import load_plugins\n"
        "load_plugins('example')\n"
        "print('arbe_example_runtime._runtime' in sys.modules)\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "False"


def test_plugins_example_runtime_runs_commands(tmp_path: Path) -> None:
    context = RuntimeContext(
        house_id="hse_example",
        house_name="example",
        state_dir=str(tmp_path / "state"),
        config=lambda name: None,
    )
    runtime = load_plugins("example").runtime("example", context)

    info = runtime.provision(SandboxSpec(labels={}))
    try:
        result = runtime.exec(info.id, "printf ok", timeout=30)
    finally:
        runtime.destroy(info.id)

    assert runtime.name == "example"
    assert info.runtime == "example"
    assert result.stdout == "ok"
    assert (tmp_path / "state" / "example").is_dir()
