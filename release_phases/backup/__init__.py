"""Backups of a service's data: named Docker volumes, paths in its first container, and
a dump (a command's stdout) taken in its running first container.

Phase 1 calls ``take``; a revert calls ``restore``; ``verify`` checks a backup on disk.
Volumes and paths go through the Docker API (``get_archive``/``put_archive``), never
through the host's ``/var/lib/docker``, so the same code works against any engine; a
dump runs through the host's Runner (``compose exec -T``). What runs now is asked of
``host.engine.Engine``; every command an operator is told to run is the project's own
(``ComposeProject.argv``), with the Compose the host detected.

- ``record``: the record, its checksums, ``verify``;
- ``deployed``: the service's containers and volumes as the engine sees them now;
- ``take``: taking a backup; ``restore``: putting one back;
- ``compare``: checking a restore member by member against the archive.

On disk, under ``root`` (``journal.Paths(repo, ticket).backups``, which is
``<repo>/.asd/workspace/backups``)::

    <service>/<stamp>/                  stamp is YYYYmmdd_HHMMSS, UTC
        01-dump-web.dump                the dump's stdout, as it came (backup.dump)
        02-volume-web-data.tar          one tar per entry that existed
        03-path-srv-data.tar
        SHA256SUMS                      `sha256sum -c SHA256SUMS` checks the archives
                                        (empty when nothing was archived)
        record.json                     written last: its presence means "complete"
        replaced-<now>/                 what stood there before a restore, same layout

A ``replaced-<now>`` directory is itself a backup whose stamp is
``<stamp>/replaced-<now>``: restoring that stamp undoes the revert.

How data is read and written:

- A volume is mounted into a throwaway container that is created but never started
  (image: the service's current container's, else the manifest image if it is
  local), and archived with ``get_archive``. To restore, the volume is removed and
  created again with the same name, driver, options and labels, and the archive is
  put back with ``put_archive``: exact, and nothing runs in any image. Docker
  removes no volume a container holds, so the service's own stopped containers
  are removed first (the revert then creates them again); a volume that another
  service's container, or a one-off ``compose run`` one, holds is refused before
  the service stops.
- A path is archived from the service's first container. To restore, the path is
  first replaced by an empty file (``put_archive`` removes a directory it replaces
  with a non-directory), then the archive is put back; directories above it that
  the container lacks are created the same way. This works on a container that is
  created and not started, so a restore never starts the service and runs nothing
  in it.
- A dump is ``backup.dump.command`` run with ``compose exec -T`` in the service's first
  container, which must be running; its stdout goes straight into the file (never
  through memory), which appears under its name only when the command exited 0 and
  wrote something. No container at all (a first release) records it absent. It goes
  back through the service itself: once the reverted service runs and is healthy,
  the file is fed on stdin to ``backup.dump.restore`` (see ``restore.Restore`` for
  the order, and for the fresh dump set aside before anything stops).
- After restoring, each target is archived again and compared member by member
  (name, type, mode, owner, mtime, link target, size and sha256 of the content)
  with the backup; the backup's own checksums are verified before anything is
  touched.

Limitations, stated plainly:

- A path is restored into the writable layer of the container that exists at
  restore time. A container that compose later *recreates* (a new image, a changed
  compose file) starts from its image again, so the restored path is lost unless it
  lies on a mount. Paths that need to survive a revert belong on a volume.
- A path that is, or contains, a mount point is refused at backup time: replacing
  it would reach into the mount. Declare the volume under ``backup.volumes``.
- Removing the service's containers to free a volume loses the link to their
  anonymous volumes (an image's ``VOLUME`` the compose file does not mount): those
  stay on the host, and the new containers get new, empty ones.
- Directories created above a restored path are owned by root with mode 0755,
  whatever the backed-up container had there.
- A path that was recorded absent (no container at backup time, a first release)
  is left as it is on restore: a stopped container's file cannot be removed
  without leaving something in its place. The container itself goes when the
  previous state (no service) is brought back.
- Nothing is restored while a container that uses a target is running, and a
  backup of a running service is only as consistent as the files are at that
  moment (no snapshot).
- A dump is as consistent as its command makes it (``pg_dump`` takes a snapshot;
  ``tar`` of a live directory does not). A dump that times out has its ``compose exec``
  killed; the command in the container may run on until it ends by itself.
- How much space a backup needs is not known before it is written (the engine
  streams an archive without its size): a full disk is found by the write that
  fails, and reported with what had been written and what is free; the partial
  directory is removed.
- Stamps have one-second resolution: a second ``take`` of a service within the same
  second fails rather than overwrite; a set-aside waits for the next second.
"""

from release_phases.backup.record import BackupRecord, Entry, RestoreReport, verify
from release_phases.backup.restore import Restore
from release_phases.backup.take import take

__all__ = ["BackupRecord", "Entry", "Restore", "RestoreReport", "take", "verify"]
