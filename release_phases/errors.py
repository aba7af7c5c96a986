"""Errors as values an operator can act on at 3 a.m.

Every failure the engine raises says three things: what happened, what was left
as it was, and the command to run next. The plugin prints them in that order, in
the terminal, the log and the HTML report.
"""

from __future__ import annotations

from release_phases.masking import mask


class ReleaseError(Exception):
    """A failure with a message for the operator.

    ``rc`` is the exit code of the command that failed (1 when no command was
    involved); the plugin copies it, and ``step``, into the log's
    ``event=failed rc=N`` line.
    """

    def __init__(
        self,
        what: str,
        *,
        untouched: str = "",
        next_command: str = "",
        rc: int = 1,
        step: str = "",
    ) -> None:
        super().__init__(what)
        self.what = what
        #: Which part of a step failed (`health`, `pre_start_init`, ...), for the log.
        self.step = step
        self.untouched = untouched
        self.next_command = next_command
        self.rc = rc

    def __str__(self) -> str:
        """The message as the terminal, the log and the report show it: a command's
        output or argv quoted in it has the run's secrets masked."""
        lines = [self.what]
        if self.untouched:
            lines.append(f"Left untouched: {self.untouched}")
        if self.next_command:
            lines.append(f"Next: {self.next_command}")
        return mask("\n".join(lines))


class ConfigError(ReleaseError):
    """Bad input (an option, a manifest, a state file): nothing was changed."""

    def __init__(self, what: str, *, next_command: str = "") -> None:
        super().__init__(
            what, untouched="everything: nothing was changed", next_command=next_command
        )
