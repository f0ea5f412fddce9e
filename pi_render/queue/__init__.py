"""Durable queues and the router that fills them."""
