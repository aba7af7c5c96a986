"""The release: prepare, migrate, ticket, verify."""
