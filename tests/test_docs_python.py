"""docs/python.md runs as written: its Python blocks, in order, in one fresh process."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "python.md"


@pytest.mark.slow  # trains twice (about a minute on a shared CPU core) and checks that the first one learned
def test_the_python_page_runs_and_prints_what_it_says(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 3
    (tmp_path / "recipes").mkdir()
    shutil.copy(ROOT / "recipes" / "quickstart.toml", tmp_path / "recipes")
    (tmp_path / "page.py").write_text("\n".join(blocks), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MMKIT_CLIP_PATH", None)
    done = subprocess.run([sys.executable, "page.py"], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"\[0, 1\] \[\[0\.\d+ 0\.\d+\]", lines[0]), lines
    metrics = re.fullmatch(r"\{'loss': [\d.]+, 'accuracy': ([\d.]+), 'auroc': ([\d.]+)\}", lines[2])
    assert metrics and float(metrics.group(1)) > 0.55 and float(metrics.group(2)) > 0.55, lines  # it learned
    assert lines[3] == "True"  # the saved and loaded model scores exactly the same
    assert "'probs': {'0': " in lines[4] and lines[5] == "(256, 2) [0, 1]" and lines[6].startswith("(2, ")
    assert lines[7] == "quickstart ['val']"
    assert "'label': '" in lines[8] and "'circle'" in lines[8] and "'triangle'" in lines[8]
    assert (tmp_path / "runs" / "quickstart" / "inputs" / "train.jsonl").is_file()
    assert (tmp_path / "claims-model" / "model.safetensors").is_file()
