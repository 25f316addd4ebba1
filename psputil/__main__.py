"""``python -m psputil reproduce --profile quick|smoke|paper``: see ``psputil.cli``."""

from psputil.cli import main

raise SystemExit(main())
