"""Recipes that ship with the package, found by name (``--recipe default``)."""
