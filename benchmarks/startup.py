"""Start-up: wall time of ``mmkit --help``, ``mmkit list`` and ``mmkit run`` until its first training
step, against ``python -c "import torch"``; and which heavy packages ``mmkit run`` imports.

Each command runs in a fresh subprocess; the commands are interleaved (one of each per repeat) and
the median is reported. "Until the first step" is measured by polling the run's ``metrics.jsonl``
(``--set train.log_every=1``) for its first line, then stopping the run. Targets: ``mmkit list``
<= 0.3 s; ``mmkit run`` imports only the plugins its recipe names -- a recipe without a text model
never imports sentence_transformers or transformers (checked from ``sys.modules`` of the run).

    python benchmarks/startup.py
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as C

NAME = "startup"
HEAVY = ("torch", "timm", "torchvision", "transformers", "sentence_transformers", "tokenizers", "numpy", "PIL")

IMAGE_ONLY = """
[run]
name = "image-only"
output_dir = "{out}"
[data]
dataset = "shapes"
options = {{ n_train = {n}, n_val = 0, n_test = 0, image_size = 32 }}
[model.encoders.image]
type = "timm"
model = "test_resnet"
[model.fusion]
type = "concat"
[model.head]
type = "classification"
[train]
max_steps = 2
batch_size = 8
"""

MINILM = """
[run]
name = "minilm"
output_dir = "{out}"
[data]
dataset = "shapes"
options = {{ n_train = {n}, n_val = 0, n_test = 0, image_size = 32 }}
[model.encoders.text]
type = "sentence-transformer"
freeze = true
[model.fusion]
type = "concat"
[model.head]
type = "classification"
[train]
max_steps = 2
batch_size = 8
"""


def mmkit_exe() -> list[str]:
    exe = Path(sys.executable).with_name("mmkit")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mmkit"]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MMKIT_PLUGINS", "MMKIT_STRICT_PLUGINS")}
    env["HF_HUB_OFFLINE"] = "1"
    return env


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), cwd=C.ROOT, timeout=300)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return seconds


WRAPPER = """
import atexit, json, runpy, sys
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["mmkit", *sys.argv[2:]]
runpy.run_module("mmkit", run_name="__main__", alter_sys=True)
"""


def until_first_step(cmd: list[str], run_dir: Path, modules: bool = False) -> tuple[float, set[str]]:
    """Seconds from spawning ``cmd`` (an ``mmkit run``) until its metrics.jsonl has a line.

    The run is then killed; with ``modules`` it runs through a wrapper that records ``sys.modules``
    at exit and is interrupted (SIGINT: the engine checkpoints and exits) so the record is written.
    ``sys.modules`` is used rather than ``-X importtime``, which does not log modules loaded through
    ``importlib.import_module`` (the registry's lazy component loading).
    """
    record = run_dir.with_suffix(".modules.json")
    if modules:
        cmd = [sys.executable, "-c", WRAPPER, str(record), *cmd[cmd.index("run"):]]
    metrics = run_dir / "metrics.jsonl"
    err = tempfile.TemporaryFile(mode="w+")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=clean_env(), cwd=C.ROOT, text=True)
    try:
        while True:
            if metrics.exists() and metrics.stat().st_size > 0:
                seconds = time.perf_counter() - t0
                break
            if proc.poll() is not None:
                err.seek(0)
                raise SystemExit(f"{' '.join(cmd)} ended (rc {proc.returncode}) before a step:\n{err.read()[-3000:]}")
            time.sleep(0.01)
        if modules:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    names: set[str] = set()
    if modules:
        if not record.exists():
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} wrote no module record:\n{err.read()[-3000:]}")
        names = set(json.loads(record.read_text()))
    return seconds, names


def heavy(names: set[str]) -> list[str]:
    return sorted({n.split(".")[0] for n in names if n.split(".")[0] in HEAVY})


def plugin_modules(names: set[str]) -> list[str]:
    """Built-in plugin modules beyond the registration modules (``mmkit_x.plugin``)."""
    return sorted(n for n in names if n.startswith("mmkit_") and "." in n and not n.endswith(".plugin"))


def main() -> None:
    p = C.parser(NAME, __doc__, repeats=5, quick_repeats=1)
    args = C.finish_args(p.parse_args(), NAME)
    load_before = C.loadavg()
    tmp = Path(tempfile.mkdtemp(prefix="mmkit-bench-"))
    mmkit = mmkit_exe()
    image_only = tmp / "image-only.toml"
    image_only.write_text(IMAGE_ONLY.format(out=(tmp / "runs").as_posix(), n=16), encoding="utf-8")
    minilm = tmp / "minilm.toml"
    minilm.write_text(MINILM.format(out=(tmp / "runs").as_posix(), n=16), encoding="utf-8")
    quickstart = C.ROOT / "recipes" / "quickstart.toml"
    counter = iter(range(10**6))

    def run_cmd(recipe: Path, extra: list[str] = ()) -> tuple[list[str], Path]:
        name = f"r{next(counter)}"
        cmd = [*mmkit, "run", str(recipe), "-q", "--set", "train.log_every=1", "--set", f"run.name={name}",
               "--set", f"run.output_dir={(tmp / 'runs').as_posix()}", *extra]
        return cmd, tmp / "runs" / name

    # timed until its first step: the real quickstart (its 5,000-image dataset generation included);
    # quick mode times only the tiny image-only run of the import check below
    sides = {
        "python -c pass": lambda: timed([sys.executable, "-c", "pass"]),
        'python -c "import torch"': lambda: timed([sys.executable, "-c", "import torch"]),
        "mmkit --help": lambda: timed([*mmkit, "--help"]),
        "mmkit list": lambda: timed([*mmkit, "list"]),
    }
    if not args.quick:
        sides["mmkit run recipes/quickstart.toml (to first step)"] = lambda: until_first_step(*run_cmd(quickstart))[0]
    C.say(f"{NAME}: {args.repeats} interleaved repeats of {len(sides)} commands ...")
    values = C.interleave(sides, args.repeats, warmup=not args.quick, log=C.say)

    C.say(f"{NAME}: modules imported by `mmkit run` up to its first step ...")
    small = ["--set", "data.options.n_train=16", "--set", "data.options.n_val=0", "--set", "data.options.n_test=0"]
    import_recipes = {"image only (timm + concat)": (image_only, [])}
    if not args.quick:
        import_recipes["quickstart (timm + text-transformer)"] = (quickstart, small)
        import_recipes["frozen MiniLM, text only (sentence-transformer)"] = (minilm, [])
    imports: dict[str, Any] = {}
    for label, (recipe, extra) in import_recipes.items():
        seconds, names = until_first_step(*run_cmd(recipe, extra), modules=True)
        if args.quick:
            values["mmkit run image-only.toml (to first step)"] = [seconds]
        imports[label] = {"heavy": heavy(names), "plugin_modules": plugin_modules(names),
                          "sentence_transformers": "sentence_transformers" in names,
                          "transformers": "transformers" in names}
    results = {name: C.summary(v) for name, v in values.items()}

    list_ok = results["mmkit list"]["median"] <= 0.3
    md = C.table(["command", f"seconds (median of {args.repeats})", "min", "max"],
                 [[name, r["median"], r["min"], r["max"]] for name, r in results.items()])
    met = "met" if list_ok else "missed"
    md += f"\n\n`mmkit list` target <= 0.3 s: **{met}** ({results['mmkit list']['median']:.3f} s).\n\n"
    md += C.table(["recipe given to `mmkit run`", "heavy packages imported",
                   "plugin component modules imported", "sentence_transformers?"],
                  [[label, ", ".join(i["heavy"]) or "-", ", ".join(i["plugin_modules"]) or "-",
                    "yes" if i["sentence_transformers"] else "no"] for label, i in imports.items()])
    C.write_result(NAME, args, {"unit": "seconds", "results": results, "imports": imports,
                                "targets": {"mmkit list": 0.3}, "list_target_met": list_ok}, md, load_before)


if __name__ == "__main__":
    main()
