"""One release context: the options, the plan, the state file as found, the host.

Built whole in `pytest_configure`, before any step runs: nothing in it is filled
in later. Phases read it and record facts through their `step`; the live state
they read is the journal's, which only the plugin writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from release_phases import PHASES, manifest, masking, scripts
from release_phases import plan as planning
from release_phases.errors import ReleaseError
from release_phases.host import ComposeProject, Host
from release_phases.host.compose import project_of
from release_phases.host.git import Git
from release_phases.host.shell import render
from release_phases.host.swarm import SwarmStack
from release_phases.journal import Journal, Paths
from release_phases.manifest import Manifest
from release_phases.options import Options
from release_phases.plan import Plan
from release_phases.state import State


@dataclass(frozen=True)
class ReleaseContext:
    options: Options
    plan: Plan
    paths: Paths
    host: Host
    journal: Journal
    #: The state file as this run found it, before its first step (None: there was none).
    found: State | None

    @classmethod
    def build(cls, options: Options, start_phase: str) -> ReleaseContext:
        """Read the state file, plan the run; a ConfigError refuses it, nothing written."""
        paths = Paths(options.repo, options.ticket)
        host = Host(options.repo)
        planning.check_repo(options)  # before the state file is read from it
        found = paths.found_state()
        plan = planning.make(options, start_phase, host.git, paths, found)
        journal = Journal(paths, found, branch=options.branch, ticket_scripts=plan.ticket_scripts)
        ctx = cls(options, plan, paths, host, journal, found)
        ctx.learn_secrets([*plan.services, *(found.services if found else ())])
        return ctx

    @property
    def state(self) -> State:
        """The live state of this run (the journal's)."""
        return self.journal.state

    @property
    def phases(self) -> tuple[str, ...]:
        """The phases this run goes through, in order."""
        return PHASES if self.options.mode == "release" else (self.options.mode,)

    @property
    def repo(self) -> Path:
        return self.options.repo

    @property
    def ticket(self) -> str:
        return self.options.ticket

    @property
    def git(self) -> Git:
        return self.host.git

    def manifest(self, service: str) -> Manifest:
        """The service's manifest as it stands in the worktree (after the pull). A revert
        reads it as deployed (`manifest.parse`): it goes back to what ran."""
        return manifest.load(self.repo, service, deployed=self.options.mode == "revert")

    def project(self, manifest: Manifest) -> ComposeProject:
        """The compose project of a service, as its manifest in the worktree declares it."""
        return project_of(self.host.compose, manifest, self.options.stop_timeout)

    def stack(self, project: ComposeProject) -> SwarmStack:
        """The swarm stack of a service with `engine: swarm`: its compose project's name,
        file and services. Without a registry (`release_pull = false`) the nodes run
        the tags as they are (`--resolve-image never`)."""
        return SwarmStack(
            name=project.name,
            file=project.file,
            services=project.services,
            resolve_image="changed" if self.options.pull else "never",
        )

    def declared_before(self, service: str) -> tuple[Manifest, ComposeProject]:
        """The service as the running version declared it: its manifest at BASE_SHA, with
        the compose project that names (a service new in this release: the worktree's).

        Its backup is taken by these declarations: the data on disk was made by the
        running version, and a release that adds a volume must not fail for the volume
        not existing yet. It is read as deployed: an unknown key an older engine let
        through is left out (`Manifest.ignored`). When one was under `backup:`, the
        running version's backup declaration is not what its authors meant, and the
        release's own (checked when planned) is taken instead: a misspelt
        `backup.pahts` must not cost the backup of the release that corrects it.
        """
        base = self.state.base_sha
        rel = f"packages/{service}"
        text = self.git.show(base, f"{rel}/manifest.yaml")
        if text is None:
            declared = self.manifest(service)
            return declared, self.project(declared)
        declared = manifest.parse(
            text,
            service=service,
            package_dir=self.repo / rel,
            source=f"{rel}/manifest.yaml at BASE_SHA {base[:12]}",
            exists=lambda name: self.git.exists(base, f"{rel}/{name}"),
            deployed=True,
        )
        if any(note.startswith("backup") for note in declared.ignored):
            declared = replace(declared, backup=self.manifest(service).backup)
        compose_text = self.git.show(base, f"{rel}/{declared.compose_file.name}") or ""
        project = project_of(
            self.host.compose, declared, self.options.stop_timeout, text=compose_text
        )
        return declared, project

    def released_after(self, service: str) -> tuple[str, ...]:
        """The service's `after:` as the release (MERGE_SHA) gave it: what a revert
        undoes in reverse, whatever the worktree holds by then. () when the release
        removed its manifest, or its manifest cannot be read."""
        merge, rel = self.state.merge_sha, f"packages/{service}"
        text = self.git.show(merge, f"{rel}/manifest.yaml") if merge else None
        if text is None:
            return ()
        try:
            return manifest.parse(
                text,
                service=service,
                package_dir=self.repo / rel,
                source=f"{rel}/manifest.yaml at MERGE_SHA {merge[:12]}",
                exists=lambda _name: True,  # only its after: is wanted here
                deployed=True,
            ).after
        except ReleaseError:
            return ()

    def learn_secrets(self, services: Sequence[str]) -> None:
        """Add the secrets the services' compose files give them (in the worktree as it
        stands) to those the run masks. A service whose manifest cannot be read has none
        to add here: the step that needs it says what is wrong."""
        for service in services:
            try:
                compose_file = self.manifest(service).compose_file
            except ReleaseError:
                continue
            masking.KNOWN.add(masking.from_compose(compose_file))

    def script_env(self, service: str | None = None) -> dict[str, str]:
        """The environment of a hook (with its SERVICE) or a ticket script."""
        st = self.state
        try:
            compose = render(self.host.compose.prefix)
        except ReleaseError:
            compose = None  # no Compose here: a script that needs none still runs
        return scripts.script_env(
            ticket=self.ticket,
            base_sha=st.base_sha,
            merge_sha=st.merge_sha,
            services=st.services,
            container_prefix=self.options.container_prefix,
            repo_root=self.repo,
            service=service,
            compose=compose,
        )
