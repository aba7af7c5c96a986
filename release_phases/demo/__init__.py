"""`release-phases demo`: a real release of three small services, in one command.

Nothing here is imported by the engine; the demo drives the engine as an operator
does, through `python -m pytest -m release` in a deploy repository it made.

- `layout`: every name and path of one demo (pure, so it can be tested alone);
- `prerequisites`: Docker, Compose v2 and a static busybox, found or fetched;
- `images`: the services' images, made with `docker import` (no registry needed);
- `repo`: the deploy repository (origin, a developer's clone, prod) and the ticket;
- `teardown`: what a rerun resets and `--clean` removes, found by label or exact name;
- `command`: the steps in order, and the command line.
"""
