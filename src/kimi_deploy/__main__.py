"""`python -m kimi_deploy` runs the CLI."""

from .cli import main

main()
