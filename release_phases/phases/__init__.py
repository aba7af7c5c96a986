"""The runs' stories: one directory per run mode, one pytest module per phase."""
