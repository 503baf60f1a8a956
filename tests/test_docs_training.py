"""docs/training.md's callback example runs as written."""

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "training.md"


def test_the_callback_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    example = next(b for b in blocks if "class LossHistory" in b)
    script = tmp_path / "example.py"
    script.write_text(example, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    match = re.fullmatch(r"(\d+) steps, last loss [\d.]+; log: (\S+)\n", done.stdout)
    assert match, done.stdout
    log = Path(match.group(2)).read_text().splitlines()
    assert len(log) == int(match.group(1)) and 1 <= len(log) <= 12
