"""Persistent dictionaries of tasks: the records of every task (later: failed tasks)."""
