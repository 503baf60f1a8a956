"""``python -m mmkit``: the same as the ``mmkit`` command."""

from mmkit._internal.cli import main

if __name__ == "__main__":
    main()
