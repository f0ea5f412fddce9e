"""pi_render: an offline-resilient single-host Blender render daemon with persistent queues."""

__version__ = "0.1.0"
