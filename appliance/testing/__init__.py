"""The test kit: fakes and checkers for the appliance, as gpiozero ships its mock pins.

What the tests, bench/ and the boot check share, importable wherever the
appliance is installed from this checkout (`pip install -e .`), with no
path tricks:

- `fake_twitch`: Twitch (OAuth, Helix, the EventSub websocket) on loopback;
  `twitch_at`: `teletype ARGS...` pointed at it.
- `engine_process`: a real `teletype serve` with its config, notify socket
  and log; `engine_inprocess`: the engine's API app in this process.
- `wire`: the other end of the Teletype's wire (a pty) and an independent
  check of what arrived.
- `arm64_isa`: the check that a Pi 3's CPU can run every library in a wheel
  (pi-gen-config/wheels-arm64.sh runs it with a bare python3).
- `corpus`: the Teletype manuals, where this machine has them.

It is not part of the appliance's wheel (pyproject.toml excludes it), so
the Pi never installs it; `make image-check` checks that. This file imports
nothing, so each module costs only what it needs.
"""
