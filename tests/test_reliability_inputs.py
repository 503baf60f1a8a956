"""Every input is bounded; one reader, one meaning (issue [D], classes 4 and 6).

Each test pins one defect found in round two (docs/reliability.md lists them): what used to be a
RecursionError/ValueError traceback, an OOM kill, or two readers disagreeing is now one clear error
naming the file and line (or the same rows everywhere).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from mmkit._internal.errors import DataError, MmkitError, ParameterError, RecipeError
from mmkit._internal.manifest import count_records, iter_records, read_manifest
from mmkit._internal.recipe import apply_overrides, load_recipe, parse_value
from mmkit._internal.safeio import loads_json, loads_toml


# ------------------------------------------------------------------------------- recipes and --set
@pytest.mark.parametrize("line, why", [
    ("x = " + "[" * 5000 + "]" * 5000, "nested more than 64 levels deep"),
    ("x = " + "{a=" * 3000, "nested more than 64 levels deep"),
    ("seed = " + "9" * 5000, "5000-digit number is too large"),
    ("a" + ".a" * 100_000 + " = 1", "dotted key with more than 64 parts"),
])
def test_hostile_toml_is_a_recipe_error_naming_file_and_line(tmp_path: Path, write_tiny_recipe, line: str,
                                                            why: str) -> None:
    """RecursionError / ValueError tracebacks before; the dotted key took tomllib 6 GB at 40k parts."""
    path = write_tiny_recipe(tmp_path / "r.toml")
    text = path.read_text() + "\n[plugins]\n" + line + "\n"
    path.write_text(text)
    with pytest.raises(RecipeError, match=rf"^{path} line {text.count(chr(10))}: .*{why}"):
        load_recipe(path)


def test_huge_dotted_key_is_refused_without_the_memory(tmp_path: Path) -> None:
    """In a process limited to 2 GiB of address space the 100k-part key is refused by name at once
    (tomllib alone needs about 25 GB for it: the kernel's OOM killer ended `mmkit check`)."""
    path = tmp_path / "r.toml"
    path.write_text("a" + ".a" * 100_000 + " = 1\n")
    code = ("import resource, sys\nresource.setrlimit(resource.RLIMIT_AS, (2 << 30, resource.RLIM_INFINITY))\n"
            "from mmkit._internal.recipe import read_toml\n"
            "try:\n    read_toml(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "RecipeError" in done.stdout and "dotted key with more than 64 parts" in done.stdout, done.stdout


@pytest.mark.parametrize("value, why", [
    ("[" * 5000, "nested more than 64 levels deep"),
    ("9" * 5000, "5000-digit number is too large"),
])
def test_set_values_are_bounded(tmp_path: Path, write_tiny_recipe, value: str, why: str) -> None:
    path = write_tiny_recipe(tmp_path / "r.toml")
    with pytest.raises(RecipeError, match=rf"^--set run\.seed: .*{why}"):
        load_recipe(path, [f"run.seed={value}"])
    with pytest.raises(RecipeError, match=rf"^-o n: .*{why}"):
        parse_value(value, "-o n")
    with pytest.raises(RecipeError, match="more than 64 parts"):
        apply_overrides({}, ["a" + ".a" * 5000 + "=1"])


def test_seeds_and_integers_are_range_checked(tmp_path: Path, write_tiny_recipe) -> None:
    path = write_tiny_recipe(tmp_path / "r.toml")
    with pytest.raises(RecipeError, match=r"run\.seed: must be between 0 and 4294967295"):
        load_recipe(path, ["run.seed=9999999999"])
    with pytest.raises(RecipeError, match=r"run\.seed: must be between"):
        load_recipe(path, ["run.seed=-1"])
    with pytest.raises(RecipeError, match=r"model\.fusion\.dim: .* too large for a 64-bit integer"):
        load_recipe(path, ["model.fusion.dim=99999999999999999999"])
    assert load_recipe(path, ["run.seed=4294967295"]).run["seed"] == 2**32 - 1


def test_valid_toml_edge_cases_still_parse() -> None:
    text = ('a = """x\\"""y"""\nb = \'\'\'[[[[\'\'\'\nc = "[{.."\nd = 1979-05-27T07:32:00.999\n'
            '[t.u.v]\nw = {p.q = 1.5}\n# [[[[[[[[\n')
    assert loads_toml(text, "x.toml") == tomllib.loads(text)


# ------------------------------------------------------------------------------- the shapes dataset
@pytest.mark.parametrize("options, why", [
    ({"image_size": 100_000}, "image_size must be between 8 and 1024"),
    ({"image_size": 0}, "image_size must be between 8 and 1024"),
    ({"n_train": 10**9}, "n_train must be between 0 and 1000000"),
    ({"n_train": -3}, "n_train must be between 0 and 1000000"),
    ({"n_train": 1_000_000, "image_size": 64}, "would hold 11.4 GiB in memory"),
])
def test_shapes_sizes_are_checked_before_anything_is_drawn(options: dict, why: str) -> None:
    """image_size = 100000 got `mmkit check` killed by the OOM killer (30 GB per image)."""
    import mmkit

    with pytest.raises(ParameterError, match=why):
        mmkit.get_registry().create("dataset", "shapes", **{"n_val": 0, "n_test": 0, **options})


# ------------------------------------------------------------------------------- one reader
ROW = '{"image": null, "claim": "there is a red circle"}'


@pytest.mark.parametrize("data, rows", [
    ((ROW + "\r") * 2, 2),                      # CR line endings: counted as 1 row by embed's old count
    ((ROW + "\r\n") * 2, 2),
    (ROW + "\n\n  \n\t\n" + ROW + "\n", 2),     # blank lines are not rows
    ("\ufeff" + ROW + "\n", 1),
])
def test_jsonl_rows_are_counted_as_they_are_read(tmp_path: Path, data: str, rows: int) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(data.encode())
    assert count_records(path) == len(list(iter_records(path))) == len(read_manifest(path)) == rows


@pytest.mark.parametrize("junk", ["\x0c", "\x1c", "\xa0", "\u2028"])
def test_a_line_of_non_json_whitespace_is_one_bad_row_everywhere(tmp_path: Path, junk: str) -> None:
    """str.strip() and bytes.strip() disagreed on these: predict skipped the line, embed counted it."""
    path = tmp_path / "in.jsonl"
    path.write_text(f"{ROW}\n{junk}\n{ROW}\n", encoding="utf-8")
    records = list(iter_records(path))
    assert count_records(path) == len(records) == 3 and isinstance(records[1][1], DataError)
    with pytest.raises(DataError, match=r"in\.jsonl line 2 \(row 2\): invalid JSON"):
        read_manifest(path)


def test_csv_blank_lines_and_counts_agree(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("image,claim\n,a\n\n\n,b\n")
    assert count_records(path) == 2 == len(read_manifest(path))


def test_duplicate_csv_header_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("image,claim,claim\n,a,b\n")
    with pytest.raises(DataError, match=r"in\.csv: header names column 'claim' twice \(columns 2 and 3\)"):
        read_manifest(path)
    with pytest.raises(DataError, match="twice"):
        count_records(path)


@pytest.mark.parametrize("name, data, where", [
    ("in.jsonl", '{"claim": ' + "[" * 5000 + "]" * 5000 + "}\n", r"line 1 \(row 1\): nested more than 64"),
    ("in.jsonl", '{"claim": 1' + "0" * 5000 + "}\n", r"line 1 \(row 1\): a 5001-digit integer is too large"),
    ("in.csv", "image,claim\n,1" + "0" * 5000 + "\n", r"line 2 \(row 1\) column claim: a 5001-digit integer"),
    ("in.csv", 'image,claim\n,ok\n,"' + "x" * 200_000 + '"\n', r"line 3: malformed CSV: a cell is longer than"),
    ("in.csv", "image,claim\n,caf\xe9\n", r"line 2: not UTF-8 text"),
])
def test_hostile_rows_name_file_line_and_row(tmp_path: Path, name: str, data: str, where: str) -> None:
    path = tmp_path / name
    path.write_bytes(data.encode("latin-1") if "\xe9" in data else data.encode())
    with pytest.raises(DataError, match=rf"{name} {where}"):
        read_manifest(path)


def test_strict_json_of_run_and_registry_files() -> None:
    with pytest.raises(MmkitError, match=r"card\.json: NaN is not valid JSON"):
        loads_json('{\n"a": 1,\n"b": NaN}', "card.json", finite=True)
    with pytest.raises(MmkitError, match="nested more than 64"):
        loads_json("[" * 100, "state.json")
    assert loads_json(json.dumps({"a": [1.5, None]}), "x.json", finite=True) == {"a": [1.5, None]}


def test_unreadable_annotations_are_any_in_the_json_schema() -> None:
    """A plugin's `Literal[foo]` (not a literal) was a ValueError traceback in `mmkit show --json`."""
    from mmkit._internal.schema import annotation_schema

    assert annotation_schema("Literal[foo]") == {} and annotation_schema("Literal[1e999]") == {}
    assert annotation_schema("Literal['a', 2]") == {"enum": ["a", 2]}
    assert annotation_schema("Optional[" * 500 + "int" + "]" * 500)  # bounded depth, no RecursionError
