"""The shared runner every reproduction script stands on (:mod:`medattn.runner.reproduction`): command line,
strategy, precision, seeds, run identity, resume, folders, records and reports around a script's own code."""

from .reproduction import Context, DataSource, Reproduction, RunSpec, UserError, flat_rows, main

__all__ = ["Context", "DataSource", "Reproduction", "RunSpec", "UserError", "flat_rows", "main"]
