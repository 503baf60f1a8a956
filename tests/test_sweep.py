"""Sweeps: grid parsing, run naming, planning (validated before training), and real tiny sweeps
through ``mmkit run --sweep`` (resume/skip, subprocess jobs, a failing run, a changed recipe)."""

from __future__ import annotations

import csv
import json
import re
import statistics
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import mmkit
from mmkit._internal.cli_run import run_cmd
from mmkit._internal.compare import compare
from mmkit._internal.errors import RecipeError
from mmkit._internal.sweep import SweepError, parse_sweep, plan_sweep, split_values


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models on a shared 2-core machine: one torch thread avoids oversubscription (measured:
    # an ablation pass took 6.7 s with 2 threads under load and 0.2 s with 1)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def tiny_recipe(tmp_path: Path, write_tiny_recipe) -> Path:
    return write_tiny_recipe(tmp_path / "tiny.toml", "train.max_steps=3", "train.log_every=1")


def invoke(*args: str):
    mmkit.reset_registry()
    return CliRunner().invoke(run_cmd, list(args), env={"COLUMNS": "200"})


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------- parsing, planning
def test_split_values_keeps_lists_tables_and_quoted_commas():
    assert split_values("concat, attention") == ["concat", "attention"]
    assert split_values("[1,2],[3, 4]") == ["[1,2]", "[3, 4]"]
    assert split_values("{a=1,b=[2,3]},'x,y',\"p,q\"") == ["{a=1,b=[2,3]}", "'x,y'", '"p,q"']
    with pytest.raises(SweepError, match="unbalanced"):
        split_values("[1,2")


def test_parse_sweep_errors_name_the_problem():
    assert parse_sweep(["train.lr=1e-3,3e-4", "model.fusion.type=concat"]) == {
        "train.lr": ["1e-3", "3e-4"], "model.fusion.type": ["concat"]}
    with pytest.raises(SweepError, match="KEY=V1,V2"):
        parse_sweep(["train.lr"])
    with pytest.raises(SweepError, match="given twice"):
        parse_sweep(["train.lr=1", "train.lr=2"])
    with pytest.raises(SweepError, match="repeated"):
        parse_sweep(["train.lr=1e-3,0.001"])  # the same TOML value written twice
    with pytest.raises(SweepError, match="empty value"):
        parse_sweep(["train.lr=1e-3,,2e-3"])


def test_plan_names_runs_safely_and_validates_every_run_first(tiny_recipe: Path):
    plan = plan_sweep(tiny_recipe, ["train.max_steps=2"],
                      ["model.fusion.type=concat,attention", "model.head.class_weights=[1.0,2.0],[2.0, 1.0]"],
                      seeds=2)
    assert len(plan.points) == 2 * 2 * 2
    names = [p.name for p in plan.points]
    assert len(set(names)) == len(names)
    assert all("/" not in n and " " not in n and "[" not in n for n in names)
    assert names[0] == "fusion.type-concat_head.class_weights-1.0-2.0_seed-3"
    assert plan.points[0].values == {"model.fusion.type": "concat", "model.head.class_weights": [1.0, 2.0]}
    assert plan.sweep_dir == tiny_recipe.parent / "runs" / "tiny-sweep"
    assert {p.seed for p in plan.points} == {3, 4}
    first = plan.recipes[names[0]]
    assert first.fusion.type == "concat" and first.train["max_steps"] == 2 and first.run["seed"] == 3
    assert first.head.params["class_weights"] == [1.0, 2.0]
    # the recipe was written for the transformer fusion: its layers/heads are left out for concat
    assert "layers" not in first.fusion.params and plan.points[0].dropped == ["model.fusion.layers",
                                                                             "model.fusion.heads"]
    # a value that does not validate fails the whole plan before anything trains
    with pytest.raises(RecipeError, match="train.lr"):
        plan_sweep(tiny_recipe, [], ["train.lr=1e-3,fast"])
    with pytest.raises(RecipeError, match="model.fusion.type"):
        plan_sweep(tiny_recipe, [], ["model.fusion.type=concat,atention"])
    assert not (tiny_recipe.parent / "runs").exists()
    with pytest.raises(SweepError, match="exclude"):
        plan_sweep(tiny_recipe, [], ["run.seed=1,2"], seeds=2)


# ------------------------------------------------------------------------------------ real sweeps
def test_sweep_two_fusions_two_seeds_then_rerun_skips_and_resumes(tiny_recipe: Path):
    args = [str(tiny_recipe), "--sweep", "model.fusion.type=concat,attention", "--seeds", "2"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    sweep = tiny_recipe.parent / "runs" / "tiny-sweep"
    rows = read_csv(sweep / "sweep.csv")
    assert len(rows) == 4
    assert [(r["model.fusion.type"], r["seed"]) for r in rows] == [
        ("concat", "3"), ("concat", "4"), ("attention", "3"), ("attention", "4")]
    for row in rows:
        assert row["status"] == "done"
        for col in ("val.accuracy", "test.accuracy", "val.loss", "samples_per_s", "wall_seconds"):
            assert float(row[col]) >= 0.0, col
        assert int(row["params.trainable"]) > 0
        summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
        assert float(row["val.accuracy"]) == pytest.approx(summary["final"]["val"]["accuracy"])
        assert summary["steps"] == 3
    # the two fusions are different models
    assert rows[0]["params.trainable"] != rows[2]["params.trainable"]
    # mean ± std per configuration, over the two seeds
    summary_rows = read_csv(sweep / "sweep_summary.csv")
    assert [r["model.fusion.type"] for r in summary_rows] == ["concat", "attention"]
    for conf in summary_rows:
        accs = [float(r["val.accuracy"]) for r in rows if r["model.fusion.type"] == conf["model.fusion.type"]]
        assert int(conf["n"]) == 2
        assert float(conf["val.accuracy.mean"]) == pytest.approx(statistics.fmean(accs))
        assert float(conf["val.accuracy.std"]) == pytest.approx(statistics.stdev(accs))
    assert json.loads((sweep / "sweep.json").read_text())[0]["model.fusion.type"] == "concat"
    assert "mean ± std over 2 seeds" in first.stdout and "4 trained" in first.stdout
    # mmkit compare reads the same runs back and finds what the sweep varied
    comp = compare([sweep])
    assert comp.keys == ["run.seed", "model.fusion.type"] and len(comp.rows) == 4 and len(comp.configs) == 2
    assert sorted(r["val.accuracy"] for r in comp.rows) == sorted(float(r["val.accuracy"]) for r in rows)

    # re-running trains nothing: every summary stays untouched
    stamps = {r["run"]: (Path(r["run_dir"]) / "summary.json").stat().st_mtime_ns for r in rows}
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert "4 skipped" in again.stdout and not re.search(r"\d+ trained", again.stdout)
    assert {r["run"]: (Path(r["run_dir"]) / "summary.json").stat().st_mtime_ns for r in rows} == stamps
    assert read_csv(sweep / "sweep.csv") == rows

    # a run that stopped after its last checkpoint (no summary yet) is resumed, not retrained
    victim = Path(rows[1]["run_dir"])
    (victim / "summary.json").unlink()
    third = invoke(*args)
    assert third.exit_code == 0, third.output
    assert "1 resumed, 3 skipped" in third.stdout
    resumed = json.loads((victim / "summary.json").read_text())
    assert resumed["steps"] == 3
    assert resumed["final"]["val"]["accuracy"] == pytest.approx(float(rows[1]["val.accuracy"]))
    log = (sweep / "sweep.log").read_text().split("\n")
    assert sum(" new " in ln for ln in log) == 4 and sum(" resume " in ln for ln in log) == 1

    # the same sweep name with a different recipe is refused instead of mixing results
    changed = invoke(*args, "--set", "train.lr=5e-3")
    assert changed.exit_code != 0
    assert "different recipe" in str(changed.exception) + changed.output


@pytest.mark.slow
def test_sweep_jobs_run_in_subprocesses_and_a_failing_run_does_not_stop_the_rest(tiny_recipe: Path):
    result = invoke(str(tiny_recipe), "--sweep", "train.lr=1e-3,1e30", "--set", "train.max_steps=2",
                    "--set", "train.grad_clip=0.0", "--jobs", "2")
    sweep = tiny_recipe.parent / "runs" / "tiny-sweep"
    rows = {r["train.lr"]: r for r in read_csv(sweep / "sweep.csv")}
    assert rows["0.001"]["status"] == "done" and float(rows["0.001"]["val.accuracy"]) >= 0
    assert rows["1e+30"]["status"] == "failed"
    assert "non-finite loss" in rows["1e+30"]["error"]
    assert result.exit_code == 1
    # each job wrote its own log; the failing one holds the error
    assert "non-finite loss" in (sweep / "logs" / f"{rows['1e+30']['run']}.log").read_text()
    assert (sweep / "logs" / f"{rows['0.001']['run']}.log").is_file()
