"""`python -m toonlab` (also what `torchrun -m toonlab` runs)."""

from toonlab.cli import main

raise SystemExit(main())
