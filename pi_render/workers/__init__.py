"""Worker threads: queue consumers and the pool that keeps them alive."""
