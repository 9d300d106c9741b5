"""``python -m multiconv``: the same command line as the ``multiconv`` script."""

from __future__ import annotations

from multiconv.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
