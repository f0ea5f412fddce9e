"""Cron: DST-safe schedules (`schedule`) and the store of each job's last fire (`store`); the
worker that fires them is `workers/cron_worker.py`."""
