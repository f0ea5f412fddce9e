"""`python -m pi_render` runs the CLI."""

from pi_render.cli import main

main()
