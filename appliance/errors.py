"""One root for the appliance's errors, with builtin mixins where one fits.

Every message is meant for the person at the Teletype: what is wrong and
what to do about it. The CLI prints them as one line, never a traceback.
"""


class ApplianceError(Exception):
    """Something the user can fix."""


class ConfigError(ApplianceError, ValueError):
    """A configuration file that cannot be used; the message names the file and key."""


class ModelError(ApplianceError, OSError):
    """The GGUF model is missing or will not load."""


class PortError(ApplianceError, OSError):
    """The Teletype's port cannot be opened or has gone away."""


class ProfileError(ApplianceError, KeyError):
    """An unknown Teletype profile or setting."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
