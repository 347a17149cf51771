"""``python -m wstrio``: the same as the ``wstrio`` command."""

from ._cli import main

raise SystemExit(main())
