"""`python -m pi_render` runs the CLI (the quick path first: pi_render/quick.py)."""

from pi_render.quick import main

main()
