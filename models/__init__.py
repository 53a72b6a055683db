"""Tortoise models, one module per domain. ``MODEL_MODULES`` is what the ORM loads."""

MODEL_MODULES = ["models.accounts", "models.market", "models.alerts"]
