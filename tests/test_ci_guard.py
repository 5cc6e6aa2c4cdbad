"""tests/conftest.py: under CI=true, a chromium/openclipart skip fails instead of passing quietly."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _run(tmp_path, ci: str):
    (tmp_path / "test_x.py").write_text(
        "import pytest\n"
        "def test_browser():\n    pytest.skip('chromium is not installed')\n"
        "@pytest.mark.skipif(True, reason='Debian openclipart-png is not installed')\n"
        "def test_clipart():\n    pass\n"
        "def test_other():\n    pytest.skip('needs a GPU')\n")
    env = {**os.environ, "CI": ci, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "conftest", "-p",
                           "no:cacheprovider", "test_x.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_ci_turns_tool_skips_into_failures(tmp_path):
    proc = _run(tmp_path, "true")
    assert proc.returncode == 1, proc.stdout
    assert "1 failed, 1 skipped, 1 error" in proc.stdout  # a skipif mark fails in setup
    assert "CI=true but this test would skip: Skipped: chromium is not installed" in proc.stdout
    assert "openclipart-png is not installed" in proc.stdout


def test_outside_ci_they_skip(tmp_path):
    proc = _run(tmp_path, "")
    assert proc.returncode == 0, proc.stdout
    assert "3 skipped" in proc.stdout
