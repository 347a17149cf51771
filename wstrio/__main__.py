"""``python -m wstrio``: the same as the ``wstrio`` command."""

from wstrio._cli import main

raise SystemExit(main())
