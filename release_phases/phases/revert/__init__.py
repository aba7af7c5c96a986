"""The revert: undo a release, code, data and containers."""
