"""``python -m pixelwise`` runs the command line (also how torchrun starts it)."""

from pixelwise.cli import program

program()
