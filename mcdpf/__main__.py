"""``python -m mcdpf`` is the same as the ``mcdpf`` command."""

from .cli import main

raise SystemExit(main())
