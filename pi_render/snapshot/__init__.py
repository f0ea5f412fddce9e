"""Snapshots at submit: a .blend, every file it needs, in a content-addressed store."""
