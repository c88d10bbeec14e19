"""The one error a config raises, shared by the schema and the loader."""


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the offending key."""
