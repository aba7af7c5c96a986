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
    st.extra["NOTE"] = 'a "quoted" $value with `ticks` and \\ slash'
    path = tmp_path / "1234.env"
    state.write(path, st)
    back = state.load(path, "1234")
    assert back == st
    out = subprocess.run(
        ["bash", "-c", f'source "{path}"; printf "%s" "$NOTE"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == st.extra["NOTE"]
    assert not [p for p in tmp_path.iterdir() if p.name != "1234.env"], "no temp file left"


def test_beginning_a_phase_forgets_it_and_every_later_outcome():
    st = _full()
    st.begin("migrate", "t1")
    st.finish("migrate", False, "t2")
    st.begin("prepare", "t3")
    assert st.timestamps == {"PREPARE_START": "t3"}
    assert (st.phase, st.phase_status) == ("prepare", "started")
    assert not st.done("prepare")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("BASE_SHA=abc\n", "TICKET is missing"),
        ("TICKET=1\nPHASE_STATUS=maybe\n", "PHASE_STATUS"),
        ("TICKET=1\nPHASE=deploy\n", "PHASE"),
        ("TICKET=1\nthis is not a pair\n", "line 2"),
        ('TICKET=1\nSERVICES="web\n', "unterminated"),
        ('TICKET=1\nBACKUPS="web"\n', "BACKUPS entry"),
        ('TICKET=1\nIMAGES="web=latest"\n', "IMAGES entry 'web=latest'"),
        ("TICKET=1\nSERVICES=web api\n", "need quotes"),
    ],
)
def test_a_damaged_state_file_is_refused_not_half_used(tmp_path, text, problem):
    path = tmp_path / "1.env"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        state.load(path, "1")
    assert str(path) in str(err.value) and problem in str(err.value)


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
