"""graphcalc's version (the budget cache keys on it, --version prints it)."""

__version__ = "0.1.0"
