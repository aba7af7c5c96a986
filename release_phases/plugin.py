"""The pytest plugin (wired in a later step)."""
