"""Routing labels as plain data: each task type's default queue."""

DEFAULT = "default"
RENDER = "render"
