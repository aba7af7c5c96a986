"""The state file and the log: their text is a contract operators and scripts read."""

from __future__ import annotations

import subprocess

import pytest

from release_phases import eventlog, state
from release_phases.errors import ConfigError

SHA_A = "a" * 40
SHA_B = "b" * 40


def _full() -> state.State:
    st = state.State(ticket="1234", base_sha=SHA_A, merge_sha=SHA_B, branch="main")
    st.begin("prepare", "2026-05-18T15:29:00Z")
    st.services = ["redmine", "wikijs"]
    st.backups = {"redmine": "20260518_153012", "wikijs": "20260518_153015"}
    st.images = {"redmine": "sha256:" + "a" * 64, "wikijs/search": "sha256:" + "b" * 64}
    st.finish("prepare", True, "2026-05-18T15:30:12Z")
    return st


def test_the_state_file_reads_exactly_as_specified():
    assert _full().to_text() == (
        "TICKET=1234\n"
        f"BASE_SHA={SHA_A}\n"
        f"MERGE_SHA={SHA_B}\n"
        "BRANCH=main\n"
        "PHASE=prepare\n"
        "PHASE_STATUS=done\n"
        'SERVICES="redmine wikijs"\n'
        'BACKUPS="redmine=20260518_153012 wikijs=20260518_153015"\n'
        f'IMAGES="redmine=sha256:{"a" * 64} wikijs/search=sha256:{"b" * 64}"\n'
        "TIMESTAMP_PREPARE_START=2026-05-18T15:29:00Z\n"
        "TIMESTAMP_PREPARE_DONE=2026-05-18T15:30:12Z\n"
    )


def test_round_trip_and_bash_agree(tmp_path):
    st = _full()
    st.extra["REVERT_SHA"] = "c" * 40
    st.images["web"] = "sha256:" + "c" * 64
    st.branch = "hotfix/x-1.2"
    path = tmp_path / "1234.env"
    state.write(path, st)
    back = state.load(path, "1234")
    assert back == st
    out = subprocess.run(
        ["bash", "-c", f'source "{path}"; printf "%s|%s" "$IMAGES" "$BRANCH"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == f"{st.pairs()[8][1]}|hotfix/x-1.2"
    assert not [p for p in tmp_path.iterdir() if p.name != "1234.env"], "no temp file left"


def test_beginning_a_phase_forgets_it_and_every_later_outcome():
    st = _full()
    st.begin("migrate", "t1")
    st.finish("migrate", False, "t2")
    st.begin("prepare", "t3")
    assert st.timestamps == {"PREPARE_START": "t3"}
    assert (st.phase, st.phase_status) == ("prepare", "started")
    assert not st.done("prepare")


def test_a_value_with_quotes_dollars_and_ticks_is_read_back_by_us_and_by_bash(tmp_path):
    """No key the writer uses holds such text today; the quoting is ready for one."""
    text = 'a "quoted" $value with `ticks` and \\ slash'
    path = tmp_path / "v.env"
    path.write_text(f"V={state._quote('V', text)}\n")
    assert state._unquote(path.read_text().split("=", 1)[1].rstrip("\n")) == text
    out = subprocess.run(
        ["bash", "-c", f'source "{path}"; printf "%s" "$V"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == text


def _edited(old: str, new: str) -> str:
    """A valid state file with one piece of its text replaced, as a hand edit would."""
    text = _full().to_text()
    assert old in text, old
    return text.replace(old, new, 1)


DAMAGED = [
    ("", "TICKET, BASE_SHA, MERGE_SHA", "empty"),
    (_edited("TICKET=1234\n", ""), "TICKET is missing", "no-ticket"),
    (_edited("PHASE_STATUS=done", "PHASE_STATUS=maybe"), "PHASE_STATUS", "status"),
    (_edited("PHASE=prepare", "PHASE=deploy"), "PHASE", "phase"),
    (_edited("BRANCH=main\n", "BRANCH=main\nthis is not a pair\n"), "line 5", "not-a-pair"),
    (_edited('SERVICES="redmine wikijs"', 'SERVICES="web'), "unterminated", "unterminated"),
    (_edited('BACKUPS="redmine=20260518_153012', 'BACKUPS="web'), "BACKUPS entry", "backups"),
    (
        _edited(f'IMAGES="redmine=sha256:{"a" * 64}', 'IMAGES="web=latest'),
        "IMAGES entry 'web=latest'",
        "images",
    ),
    (_edited('SERVICES="redmine wikijs"', "SERVICES=web api"), "need quotes", "quotes"),
    (_edited(f"BASE_SHA={SHA_A}", "BASE_SHA=abc"), "BASE_SHA is 'abc', not a commit", "sha"),
    (_edited("BRANCH=main", "BRANCH=-x"), "BRANCH is '-x', not a branch name", "branch"),
    (
        _edited("15:30:12Z", "yesterday"),
        "TIMESTAMP_PREPARE_DONE is '2026-05-18Tyesterday'",
        "timestamp",
    ),
    (
        _edited("TIMESTAMP_PREPARE_DONE=2026-05-18T15:30:12Z\n", ""),
        "TIMESTAMP_PREPARE_DONE is missing",
        "outcome-without-its-time",
    ),
    (_edited("TICKET=1234\n", "TICKET=1234\nTICKET=1234\n"), "set twice", "twice"),
]


@pytest.mark.reliability("bad input", "a damaged state file")
@pytest.mark.parametrize(
    ("text", "problem"),
    [pytest.param(text, problem, id=name) for text, problem, name in DAMAGED],
)
def test_a_damaged_state_file_is_refused_not_half_used(tmp_path, text, problem):
    path = tmp_path / "1.env"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        state.load(path, "1234")
    assert str(path) in str(err.value) and problem in str(err.value), str(err.value)


@pytest.mark.reliability("bad input", "an unknown key in the state file")
@pytest.mark.parametrize(
    ("line", "suggestion"),
    [
        ("BASE_SAH=" + SHA_A, "did you mean BASE_SHA?"),
        ("TIMESTAMP_MIGRATE_DONNE=2026-05-18T15:30:12Z", "did you mean TIMESTAMP_MIGRATE_DONE?"),
        ("REVERTSHA=" + SHA_A, "did you mean REVERT_SHA?"),
        ("NOTE=hello", ""),
    ],
)
def test_an_unknown_key_is_refused_with_the_nearest_known_one(tmp_path, line, suggestion):
    path = tmp_path / "1234.env"
    path.write_text(_full().to_text() + line + "\n")
    with pytest.raises(ConfigError) as err:
        state.load(path, "1234")
    message = str(err.value)
    key = line.split("=")[0]
    assert f"{path} is unreadable: line 12: {key} is not a key of a state file" in message
    assert suggestion in message and ("did you mean" in message) == bool(suggestion), message


@pytest.mark.reliability("bad input", "a state file cut short")
def test_a_state_file_cut_anywhere_is_refused_or_reads_as_what_it_kept(tmp_path):
    """Every cut: at a line boundary before the last line, within a line, or nothing
    left. Only the whole file reads; each shorter one is refused."""
    text = _full().to_text()
    path = tmp_path / "1234.env"
    for end in range(len(text)):
        path.write_text(text[:end])
        with pytest.raises(ConfigError, match="is unreadable"):
            state.load(path, "1234")
    path.write_text(text)
    assert state.load(path, "1234") == _full()


def test_every_key_the_steps_record_is_one_the_reader_takes(tmp_path):
    st = _full()
    for key in state.RECORDED_KEYS:
        st.extra[key] = "b" * 40 if key.endswith("_SHA") or key == "PULL_FROM" else "main"
    state.write(tmp_path / "1234.env", st)
    assert state.load(tmp_path / "1234.env", "1234").extra == st.extra


def test_a_step_cannot_record_a_key_the_reader_would_refuse():
    from release_phases.steps import Step

    step = Step(phase="revert", name="test_revert_code")
    step.record(REVERT_SHA="c" * 40)
    with pytest.raises(ValueError, match="REVERTED_SHA: not keys of the state file"):
        step.record(REVERTED_SHA="c" * 40)
    assert step.facts == {"REVERT_SHA": "c" * 40}


def test_missing_and_foreign_state_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"no state file .*1\.env"):
        state.load(tmp_path / "1.env", "1")
    state.write(tmp_path / "1.env", state.State(ticket="2"))
    with pytest.raises(ConfigError, match="belongs to ticket 2, not 1"):
        state.load(tmp_path / "1.env", "1")


def test_log_lines_have_the_specified_shape(tmp_path):
    path = tmp_path / "1234.log"
    lines = [
        eventlog.format_line("1234", "prepare", "start", at="2026-05-18T15:29:00Z"),
        eventlog.format_line(
            "1234", "migrate", "start", at="2026-05-18T15:30:12Z", services="redmine wikijs"
        ),
        eventlog.format_line(
            "1234", "verify", "failed", at="2026-05-18T15:34:05Z", rc=1, service="wikijs"
        ),
    ]
    for line in lines:
        eventlog.append(path, line)
    assert path.read_text().splitlines() == [
        "2026-05-18T15:29:00Z ticket=1234 phase=prepare event=start",
        '2026-05-18T15:30:12Z ticket=1234 phase=migrate event=start services="redmine wikijs"',
        "2026-05-18T15:34:05Z ticket=1234 phase=verify event=failed rc=1 service=wikijs",
    ]
    parsed = eventlog.parse_line(lines[1])
    assert parsed == {
        "time": "2026-05-18T15:30:12Z",
        "ticket": "1234",
        "phase": "migrate",
        "event": "start",
        "services": "redmine wikijs",
    }


@pytest.mark.reliability("bad input", "a state file that is not UTF-8 text, or not a file")
def test_a_state_file_that_is_not_text_or_not_a_file_is_refused(tmp_path):
    path = tmp_path / "1234.env"
    path.write_bytes(_full().to_text().encode() + b"\xff\xfe\n")
    with pytest.raises(ConfigError, match=r"1234\.env is unreadable: byte \d+ is not UTF-8"):
        state.load(path, "1234")
    path.unlink()
    path.mkdir()
    with pytest.raises(ConfigError, match=r"1234\.env is unreadable: Is a directory"):
        state.load(path, "1234")
