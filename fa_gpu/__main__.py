"""``python -m fa_gpu``: the ``fa-gpu`` command line (see :mod:`fa_gpu.cli`)."""
from .cli import main

raise SystemExit(main())
