"""docs/recipes.md's key reference is generated from the recipe definitions and kept in sync."""

from pathlib import Path

from mmkit._internal.recipe import reference_markdown


def test_recipe_reference_is_current() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "recipes.md").read_text(encoding="utf-8")
    assert reference_markdown().strip() in doc, "regenerate the key reference at the end of docs/recipes.md"
