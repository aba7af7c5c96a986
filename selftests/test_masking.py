"""Masking secrets: which values are secret, how text is masked (whole or streamed),
and the places where text leaves the engine masking it."""

from __future__ import annotations

import io
import itertools
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from release_phases import eventlog, masking, plugin, report
from release_phases.errors import ReleaseError
from release_phases.host.shell import CommandFailed, Runner
from release_phases.masking import MASK, Secrets
from release_phases.state import State


@pytest.fixture
def known():
    """The run's secrets, as a test sets them; emptied again afterwards."""
    masking.KNOWN.clear()
    yield masking.KNOWN
    masking.KNOWN.clear()


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("API_TOKEN", True),
        ("db_password", True),
        ("ClientSecret", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("SSH_KEY", True),
        ("github_token_2", True),
        ("PATH", False),
        ("HOME", False),
        ("DB_USER", False),
        ("PASSWD", False),  # not the pattern; says so rather than guessing
    ],
)
def test_a_name_looks_secret_by_its_words(name: str, secret: bool) -> None:
    assert masking.looks_secret(name) is secret


@pytest.mark.parametrize(
    ("secrets", "text", "shown"),
    [
        ([], "nothing to hide", "nothing to hide"),
        (["hunter2-very-secret"], "pw=hunter2-very-secret;", f"pw={MASK};"),
        (["abcd"], "abcd abcdabcd", f"{MASK} {MASK}{MASK}"),
        # the longer of two nested secrets is hidden whole, not around the shorter
        (["abcd", "xxabcdyy"], "xxabcdyy abcd", f"{MASK} {MASK}"),
        # regex characters in a secret are taken literally
        (["a.b*c+d"], "a.b*c+d axbbbcd", f"{MASK} axbbbcd"),
        # values under MIN_LENGTH are not secrets: `1` would hide every digit
        (["1", "db", "yes"], "db 1 yes", "db 1 yes"),
        (["", "      ", " db "], "a      b db ", "a      b db "),
    ],
)
def test_mask_replaces_every_known_secret(secrets: list[str], text: str, shown: str) -> None:
    assert Secrets(secrets).mask(text) == shown


def test_from_environ_takes_the_values_of_secret_names_only() -> None:
    environ = {"API_TOKEN": "tok-123456", "DB_PASSWORD": "pw-654321", "HOME": "/root"}
    assert masking.from_environ(environ) == {"tok-123456", "pw-654321"}


def test_an_env_file_is_read_as_compose_reads_it() -> None:
    text = textwrap.dedent(
        """\
        # a comment
        DB_PASSWORD=hunter2-very-secret
        export EXPORTED=exported-value
        SINGLE='literal $HOME value'
        DOUBLE="from ${SOURCE}"
        BARE=bare-value # a comment after it
        DEFAULTED=${UNSET:-fallback-value}
        FROM_ENV
          SPACED = spaced-value
        """
    )
    assert masking.parse_env_file(text, {"SOURCE": "the-source"}) == {
        "DB_PASSWORD": "hunter2-very-secret",
        "EXPORTED": "exported-value",
        "SINGLE": "literal $HOME value",
        "DOUBLE": "from the-source",
        "BARE": "bare-value",
        "DEFAULTED": "fallback-value",
        "SPACED": "spaced-value",
    }


def test_a_compose_file_gives_its_env_files_and_its_secret_named_environment(
    tmp_path: Path,
) -> None:
    (tmp_path / "db.env").write_text("DB_PASSWORD=hunter2-very-secret\nDB_NAME=orders-db\n")
    (tmp_path / "more.env").write_text("SMTP_PASS=smtp-secret-value\n")
    (tmp_path / ".env").write_text("SIGNING_KEY=signing-key-value\nIMAGE_TAG=2\n")
    (tmp_path / "compose.yaml").write_text(
        textwrap.dedent(
            """\
            services:
              api:
                image: demo/api:2
                env_file: db.env
                environment:
                  API_TOKEN: literal-token-value
                  LOG_LEVEL: debug-verbose
                  SESSION_SECRET: ${SESSION_SECRET_SOURCE}
              worker:
                image: demo/worker:2
                env_file:
                  - path: more.env
                  - path: absent.env
                    required: false
                environment:
                  - WORKER_KEY=worker-key-value
                  - WORKER_NAME=worker-one
                  - FROM_SHELL
            """
        )
    )
    found = masking.from_compose(
        tmp_path / "compose.yaml", {"SESSION_SECRET_SOURCE": "session-secret-value"}
    )
    assert found == {
        "hunter2-very-secret",
        "orders-db",  # every value of an env_file, whatever its name
        "smtp-secret-value",
        "signing-key-value",
        "literal-token-value",
        "session-secret-value",
        "worker-key-value",
    }


def test_a_compose_file_that_cannot_be_read_gives_no_secrets(tmp_path: Path) -> None:
    assert masking.from_compose(tmp_path / "missing.yaml", {}) == set()
    (tmp_path / "bad.yaml").write_text("services: [unclosed\n")
    assert masking.from_compose(tmp_path / "bad.yaml", {}) == set()


def _streamed(secrets: Secrets, pieces: list[str]) -> tuple[str, list[str]]:
    stream = secrets.stream()
    shown = [stream.feed(piece) for piece in pieces]
    shown.append(stream.flush())
    return "".join(shown), shown


def test_a_secret_split_across_pieces_is_masked_and_the_rest_shown_at_once() -> None:
    secrets = Secrets(["hunter2-very-secret"])
    whole, shown = _streamed(secrets, ["pw=hun", "ter2-very", "-secret; progress 10%", " 20%"])
    assert whole == f"pw={MASK}; progress 10% 20%"
    assert shown[0] == "pw=", "a piece is let go as far as it cannot start a secret"
    assert shown[1] == ""
    assert shown[3] == " 20%", "text that cannot start a secret is not held back"


@given(
    text=st.text(alphabet="abcdxy-", max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=6),
)
def test_streamed_pieces_mask_exactly_as_the_whole_text(text: str, cuts: list[int]) -> None:
    secrets = Secrets(["abcd", "abcdxyab", "dxy-", "bbbb"])
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    assert _streamed(secrets, pieces)[0] == secrets.mask(text)


def test_the_runner_echoes_masked_output_but_runs_with_and_keeps_the_real_value() -> None:
    sink = io.StringIO()
    runner = Runner(stream_to=sink, secrets=Secrets(["hunter2-very-secret"]))
    code = "import sys; print('pw=' + sys.argv[1], flush=True)"
    result = runner.run([sys.executable, "-c", code, "hunter2-very-secret"], stream=True)
    assert sink.getvalue() == f"pw={MASK}\n"
    assert result.output == "pw=hunter2-very-secret\n", "callers parse the real output"
    assert result.argv[-1] == "hunter2-very-secret"


def test_an_error_quoting_a_command_and_its_output_is_masked(known: Secrets) -> None:
    known.add(["hunter2-very-secret"])
    code = "import sys; print('login with', sys.argv[1]); sys.exit(3)"
    with pytest.raises(CommandFailed) as failed:
        Runner().run([sys.executable, "-c", code, "hunter2-very-secret"])
    message = str(failed.value)
    assert "hunter2-very-secret" not in message
    assert f"login with {MASK}" in message
    assert message.count(MASK) == 2, message  # in the argv shown and in the output
    error = ReleaseError(
        "what", untouched="x hunter2-very-secret", next_command="hunter2-very-secret"
    )
    assert str(error) == f"what\nLeft untouched: x {MASK}\nNext: {MASK}"


def test_the_log_masks_field_values_but_keeps_its_own_words(known: Secrets) -> None:
    known.add(["hunter2-very-secret", "1234-release"])
    line = eventlog.format_line(
        "1234-release", "ticket", "failed", "2026-05-18T15:29:00Z", note="pw hunter2-very-secret"
    )
    assert line == (
        f'2026-05-18T15:29:00Z ticket=1234-release phase=ticket event=failed note="pw {MASK}"'
    )
    assert eventlog.parse_line(line)["note"] == f"pw {MASK}"


def test_the_state_file_never_masks_the_engines_ids(known: Secrets) -> None:
    """It holds no free text (the reader refuses any key it does not know), only ids
    it checks: a secret equal to one must not make the file unreadable."""
    base = "a" * 40
    known.add(["hunter2-very-secret", base, "api-service"])
    state = State(ticket="1234", base_sha=base, services=["api-service"])
    state.extra["DRIFT"] = "api-service"
    again = State.from_text(state.to_text(), "test")
    assert again == state and MASK not in state.to_text()


def test_the_reports_every_value_and_a_steps_details_are_masked(known: Secrets) -> None:
    known.add(["pa&ss<word>"])
    # Masked before it is escaped: the secret is found as it was printed.
    assert report.escape("login pa&ss<word>") == f"login {MASK}"
    assert report.detail_html("output", "pa&ss<word>\n") == (
        f"<div class='release-detail'><h4>output</h4><pre>{MASK}\n</pre></div>"
    )


@pytest.mark.parametrize(
    ("longrepr", "shown"),
    [
        ("failed with hunter2-very-secret", f"failed with {MASK}"),
        (("f.py", 3, "Skipped: hunter2-very-secret"), ("f.py", 3, f"Skipped: {MASK}")),
        (None, None),
    ],
)
def test_what_pytest_prints_of_a_step_is_masked(known: Secrets, longrepr, shown) -> None:
    known.add(["hunter2-very-secret"])
    rep = pytest.TestReport(
        "test_x.py::test_x",
        ("test_x.py", 1, "test_x"),
        {},
        "skipped" if isinstance(longrepr, tuple) else "failed",
        longrepr,
        "call",
        sections=[("Captured stderr call", "echo hunter2-very-secret\n")],
    )
    plugin.mask_report(rep)
    assert rep.longrepr == shown
    assert rep.sections == [("Captured stderr call", f"echo {MASK}\n")]
