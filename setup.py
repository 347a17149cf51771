"""Build the optional C accelerator; wstrio works without it (pure-Python fallback)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("wstrio._speedups", ["wstrio/_speedups.c"], optional=True)])
