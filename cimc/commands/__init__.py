"""Subcommands of the `cimc` CLI, one module each (see cimc/cli.py for the contract)."""
