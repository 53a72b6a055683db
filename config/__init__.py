"""Configuration: typed settings from the environment, validated at start."""

from config.settings import ConfigError, Settings, ephemeral_secret, load_settings

__all__ = ["ConfigError", "Settings", "ephemeral_secret", "load_settings"]
