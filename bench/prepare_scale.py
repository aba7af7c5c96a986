"""Benchmark 4: the plan at scale. A synthetic deploy repo of P packages and C commits
(made with `git fast-import`), then a merge that changes 50 services; timed: the
diff and the validated manifests of the changed services, as the plan computes them
(the fetch aside), against `git diff --name-only` alone in the same run, which is the
floor: the plan also reads and validates each changed service's manifest.
"""

from __future__ import annotations

import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from release_phases.host.git import Git
from release_phases.host.shell import Runner
from release_phases.plan import services_between

CHANGED = 50


def _manifest(name: str, tag: int) -> bytes:
    return (
        f"image: {{name: example/{name}, tag: '{tag}'}}\n"
        f"health: {{endpoint: 'http://127.0.0.1:8080/health', timeout: 30}}\n"
    ).encode()


def _compose(name: str) -> bytes:
    return f"services:\n  {name}:\n    image: example/{name}:1\n".encode()


def _stream(packages: int, commits: int) -> bytes:
    """A fast-import stream: every package at tag 1, then commits bumping random ones,
    then a merge commit on top that changes CHANGED services (its first parent: BASE)."""
    rng = random.Random(packages * 7 + commits)
    out: list[bytes] = []
    mark = 0

    def commit(files: dict[str, bytes], message: str, parent: int | None) -> int:
        nonlocal mark
        mark += 1
        out.append(f"commit refs/heads/main\nmark :{mark}\n".encode())
        out.append(b"committer bench <bench@example.invalid> 1700000000 +0000\n")
        out.append(f"data {len(message)}\n{message}\n".encode())
        if parent is not None:
            out.append(f"from :{parent}\n".encode())
        for path, data in files.items():
            out.append(f"M 644 inline {path}\ndata {len(data)}\n".encode() + data + b"\n")
        return mark

    names = [f"svc{i:04d}" for i in range(packages)]
    files = {}
    for name in names:
        files[f"packages/{name}/manifest.yaml"] = _manifest(name, 1)
        files[f"packages/{name}/compose.yaml"] = _compose(name)
    last = commit(files, "all packages", None)
    tags = dict.fromkeys(names, 1)
    for n in range(commits - 2):
        name = rng.choice(names)
        tags[name] += 1
        last = commit(
            {f"packages/{name}/manifest.yaml": _manifest(name, tags[name])},
            f"bump {name} ({n})",
            last,
        )
    changed = rng.sample(names, min(CHANGED, packages))
    commit(
        {f"packages/{n}/manifest.yaml": _manifest(n, tags[n] + 1) for n in changed},
        "the ticket",
        last,
    )
    return b"".join(out)


def _repo(packages: int, commits: int) -> Path:
    root = Path(tempfile.mkdtemp(prefix="rp-bench-scale-"))
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    subprocess.run(
        ["git", "-C", str(root), "fast-import", "--quiet"],
        input=_stream(packages, commits),
        check=True,
    )
    subprocess.run(["git", "-C", str(root), "checkout", "-q", "main"], check=True)
    return root


def measure(packages: int, commits: int, rounds: int) -> dict[str, float]:
    repo = _repo(packages, commits)
    try:
        git = Git(repo, Runner())
        base, merge = git.resolve("HEAD~1"), git.head()
        assert base is not None
        plan_times, diff_times = [], []
        for _ in range(rounds):
            began = time.perf_counter()
            subprocess.run(
                ["git", "-C", str(repo), "diff", "--name-only", base, merge],
                check=True,
                capture_output=True,
            )
            diff_times.append(time.perf_counter() - began)
            began = time.perf_counter()
            found, _ = services_between(git, repo, base, merge)
            plan_times.append(time.perf_counter() - began)
            assert len(found) == min(CHANGED, packages), sorted(found)
        plan, diff = statistics.median(plan_times), statistics.median(diff_times)
        return {"plan_s": plan, "diff_s": diff, "ratio": plan / diff}
    finally:
        shutil.rmtree(repo, ignore_errors=True)
