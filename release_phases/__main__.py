"""`python -m release_phases` is the `release-phases` command."""

from release_phases.cli import main

raise SystemExit(main())
