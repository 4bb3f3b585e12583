"""The PRSM API service (`prsm serve`)."""

from prsm.server.app import create_app, create_app_from_env

__all__ = ["create_app", "create_app_from_env"]
