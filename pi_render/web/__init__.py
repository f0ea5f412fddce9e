"""`pi-render web`: the dashboard, a process of its own (an extra: `pip install
'pi-render[web]'`). It reads the daemon through its Unix socket as the person who started it,
so the daemon's roles apply unchanged, and the daemon imports nothing of it."""
