"""Imports from a chain's old system (CSV or XLSX): members with opening balances, historical orders."""

from onemember.imports.members import import_members_file
from onemember.imports.orders import import_orders_file
from onemember.imports.result import ImportResult, Problem, Rejection

__all__ = ["ImportResult", "Problem", "Rejection", "import_members_file", "import_orders_file"]
