"""Scripts that run inside Blender (never imported by the daemon)."""
