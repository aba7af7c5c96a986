"""Root conftest: makes `selftests.support` importable when pytest runs from this repo.

The release engine itself is loaded through the `pytest11` entry point, never from
here, so that a deploy repository gets exactly what this repository tests.
"""
