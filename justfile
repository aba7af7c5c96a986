# The operator surface, as thin wrappers over the pytest commands.
# Run in the deploy repository (recipes run where `just` was called):
#   just -f /path/to/release-phases/justfile release-run 1234 --from=verify
# Every extra argument (--from=PHASE, --branch B --force-allow-non-main, --skip-git,
# --skip-data, --base-sha SHA) passes through unchanged.

# The Python that has the engine: the virtual environment `.ci/setup` makes beside this
# justfile when there is one (a bare python3 may be a system Python without it), else
# python3 from PATH.
python := if path_exists(justfile_directory() / ".venv/bin/python") == "true" {
    quote(justfile_directory() / ".venv/bin/python")
} else {
    "python3"
}

# Release a ticket: prepare, migrate, ticket, verify.
[no-cd]
release-run TICKET *ARGS:
    {{python}} -m pytest -m release --ticket {{TICKET}} {{ARGS}}

# Undo a release: code, data and containers.
[no-cd]
release-revert TICKET *ARGS:
    {{python}} -m pytest -m revert --ticket {{TICKET}} {{ARGS}}

# After a hotfix release: back to main once the hotfix is merged.
[no-cd]
release-return-to-main *ARGS:
    {{python}} -m pytest -m return_to_main {{ARGS}}
