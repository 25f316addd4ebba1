"""``python -m psputil reproduce --profile quick|smoke|paper``: see ``psputil.book.cli``."""

from psputil.book.cli import main

raise SystemExit(main())
