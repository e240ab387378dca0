"""The demo chain: ``onemember demo`` loads a realistic retail chain with members and a year of orders."""

from onemember.demo.generator import DemoResult, generate

__all__ = ["DemoResult", "generate"]
