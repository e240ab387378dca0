"""OneMember: one member across every store of a retail chain."""

__version__ = "0.1.0"
