"""Benchmarks that run from the CLI (`recaption bench ...`): the realign world and its table."""
