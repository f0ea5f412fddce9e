"""The daemon: its composition root (`core.Daemon`), the data dir lock, recovery at start,
systemd notifications and the data dir's file modes."""
