"""gpiozero's devices for the button and the motor, and why none could be made."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

from appliance.errors import ApplianceError

T = TypeVar("T")


class NoPinFactory(ApplianceError, RuntimeError):
    """No pin factory of gpiozero's works here; `tried` says why each failed."""

    def __init__(self, tried: str):
        super().__init__(tried)
        self.tried = tried


def make_devices(make: Callable[[], T]) -> T:
    """What `make` builds from gpiozero's devices; NoPinFactory with every factory's reason."""
    from gpiozero.exc import BadPinFactory, PinFactoryFallback

    try:
        with warnings.catch_warnings(record=True) as fallbacks:
            # gpiozero warns about every factory it tries; the caller's error says it all.
            warnings.simplefilter("always", PinFactoryFallback)
            return make()
    except BadPinFactory as e:
        # Why each factory failed: on a Pi that is the real fault (a device it
        # may not open, a directory it may not write), not "no GPIO".
        raise NoPinFactory("; ".join(str(w.message) for w in fallbacks) or str(e)) from e
