"""The tree stays ruff-clean (lint and format), as CI would otherwise let drift in."""

import subprocess
import sys

from tests.conftest import REPO


def test_ruff_check_and_format():
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *args], cwd=REPO, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
