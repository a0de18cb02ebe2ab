"""`python -m factgpt` (what torchrun runs)."""

from factgpt.cli import main

raise SystemExit(main())
