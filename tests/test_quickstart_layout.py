"""`audiollm quickstart` finds its recipe and the shared recordings from any working directory, and
`python demos/app.py` stands on its own (the demo does not import the CLI)."""

import json
import os
import subprocess
import sys

import pytest

# Runs `audiollm quickstart ARGS` once per JSON list of ARGS with data_prep.prepare stubbed: the offline
# builders "succeed", fsdd stops the run naming the folder it was given, so the recipe's lookup is seen
# without building or training anything. Prints each exit status.
STUBBED = """
import json, sys
from pathlib import Path
import data_prep
from audiollm.cli import main

def prepare(corpus, src, out, **options):
    if corpus == "fsdd":
        raise ValueError(f"stub fsdd {src}")
    return Path(out) / "train.jsonl"

data_prep.prepare = prepare
for args in sys.argv[1:]:
    print("exit", main(["quickstart", *json.loads(args)]), flush=True)
"""


def run_elsewhere(cwd, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


def test_quickstart_help_from_another_directory(tmp_path):
    done = run_elsewhere(tmp_path, "-m", "audiollm.cli", "quickstart", "--help")
    assert done.returncode == 0, done.stderr
    for option in ("--out", "--codec", "--shared", "--minutes", "--music-minutes", "--sfx-minutes",
                   "--codec-minutes", "--max-steps", "--train-minutes", "--eval-limit", "--seed"):  # fmt: skip
        assert option in done.stdout


@pytest.mark.slow
def test_quickstart_finds_its_recipe_and_shared_data_from_another_directory(tmp_path):
    """From tmp_path (no recipes/ there, the repository not on sys.path): the pipeline runs, reading the real
    recordings from AUDIOLLM_SHARED_DATA by default and from --shared when given."""
    shared, mine, out = tmp_path / "shared", tmp_path / "mine", tmp_path / "qs"
    runs = [["--out", str(out)], ["--out", str(out), "--shared", str(mine)]]
    env = {"AUDIOLLM_SHARED_DATA": str(shared), "PYTHONPATH": ""}
    done = run_elsewhere(tmp_path, "-c", STUBBED, *map(json.dumps, runs), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(f"[quickstart] prepare offline-speech -> {out / 'data' / 'speech'}") == 2
    assert done.stdout.count("exit 1") == 2, done.stdout
    assert [line for line in done.stderr.splitlines() if line.startswith("audiollm ")] == [
        f"audiollm quickstart: error: stub fsdd {folder / 'fsdd_spoken_digits'}" for folder in (shared, mine)
    ]


@pytest.mark.slow
def test_demo_script_runs_without_the_cli(tmp_path, capsys):
    """`python demos/app.py` takes `audiollm demo`'s options and reports a bad model in one line."""
    pytest.importorskip("gradio")
    from demos import app

    with pytest.raises(SystemExit) as exit_:
        app.main(["--model", str(tmp_path / "missing"), "--port", "0"])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "error:" in err and "--model DIR" in err and err.count("\n") == 1
