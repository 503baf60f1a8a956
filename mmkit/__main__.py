"""``python -m mmkit``: the same as the ``mmkit`` command."""

from mmkit.cli import main

if __name__ == "__main__":
    main()
