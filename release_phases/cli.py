"""The `release-phases` command. Releases themselves run through pytest
(`pytest -m release --ticket T`); this command holds what is not a release: the demo.

The engine never imports this module, nor the demo package it leads to.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="release-phases",
        description="Releases run with `pytest -m release --ticket T` in the deploy "
        "repository; this command runs the demo.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Imported here: `release-phases --help` should not need Docker's SDK loaded.
    from release_phases.demo import command as demo

    demo.add_parser(commands)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
