"""The container image: its build without a registry (image.py) and its HEALTHCHECK (healthcheck.py)."""
