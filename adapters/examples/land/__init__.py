"""Example adapter: see adapters/examples/__init__.py."""
