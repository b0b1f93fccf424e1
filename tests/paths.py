"""Paths the tests share (a module of its own: two conftest.py files cannot be imported by name)."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
DATA = TESTS / "data"
