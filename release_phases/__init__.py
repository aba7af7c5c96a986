"""release-phases: a release engine for Docker Compose services, run as pytest phases."""

PHASES: tuple[str, ...] = ("prepare", "migrate", "ticket", "verify")
