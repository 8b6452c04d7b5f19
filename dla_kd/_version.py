"""The version of dla-kd (keep setup.py's ``version`` the same)."""
__version__ = "0.1.0"
