"""Hooks: what is owed to whom (`outbox`, written in the same commit as the final record) and
the worker that delivers it (`worker`)."""
