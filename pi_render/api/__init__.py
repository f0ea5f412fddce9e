"""The HTTP/JSON API on a Unix socket: routes, server and client."""
