"""The one configuration file: TOML, a default for every key, validation that names the key.

Looked for, in order: the path given with --config; /boot/firmware/teletype.toml
(the FAT boot partition, so it can be edited from any computer before first
boot); /etc/teletype-gpt2/teletype.toml; else the defaults alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError

SEARCH_PATHS = (
    Path("/boot/firmware/teletype.toml"),
    Path("/etc/teletype-gpt2/teletype.toml"),
)


def _opt(default: Any, help: str, *, choices=None, min=None, max=None, secret=False):
    meta = {"help": help, "choices": choices, "min": min, "max": max, "secret": secret}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelConfig:
    path: str = _opt(
        "", "GGUF file: a name beside this file, or a full path; empty for the embedded model"
    )
    threads: int = _opt(0, "CPU threads for generation; 0: one per core it may use", min=0, max=64)
    flash_attn: bool = _opt(True, "llama.cpp's flash attention (a sooner first character: bench/)")
    temperature: float = _opt(0.75, "sampling temperature", min=0.0, max=2.0)
    top_p: float = _opt(0.9, "nucleus sampling", min=0.0, max=1.0)
    top_k: int = _opt(40, "keep only the k likeliest tokens; 0 for all", min=0)
    repeat_penalty: float = _opt(1.15, "discourage recent tokens (stops loops)", min=1.0, max=2.0)
    repeat_last_n: int = _opt(64, "how many recent tokens the penalty looks at", min=0)
    max_chars: int = _opt(500, "stop at the first sentence end past this", min=20, max=5000)
    seed: int = _opt(-1, "sampling seed; -1 for a new one each time", min=-1)
    check_memory: bool = _opt(
        True, "refuse at start a model too big for this board's memory (README: boards)"
    )


@dataclass(frozen=True)
class TeletypeConfig:
    profile: str = _opt("asr33", "asr33, model28 or ita2", choices=("asr33", "model28", "ita2"))
    port: str = _opt("/dev/teletype", "serial device, 'virtual', or 'file:PATH'")
    parity: str = _opt(
        "",
        "even, odd, mark, space or none; empty for the profile's",
        choices=("", "even", "odd", "mark", "space", "none"),
    )
    parity_source: str = _opt(
        "software",
        "who makes the parity bit: 'software' (8N2 frames) or 'uart' (7 bits + parity)",
        choices=("software", "uart"),
    )
    cr_fills: int = _opt(2, "fill characters after a carriage return", min=0, max=10)
    lf_fills: int = _opt(1, "fill characters after a line feed", min=0, max=10)
    fill: str = _opt("nul", "the fill character: nul or del", choices=("nul", "del"))
    speed: float = _opt(
        1.0,
        "print speed factor (2 = twice as fast); a real Teletype prints at its own pace",
        min=0.1,
        max=1000,
    )
    half_duplex: bool = _opt(False, "the loop echoes what we send: ignore it when reading")


@dataclass(frozen=True)
class HistoryConfig:
    lines: int = _opt(5, "chat lines kept as the prompt", min=1, max=50)
    opening: str = _opt("The Teletype Model 33", "the prompt while there are no chat lines yet")


@dataclass(frozen=True)
class KeyboardConfig:
    enabled: bool = _opt(True, "a line typed on the Teletype's keyboard is a prompt")


@dataclass(frozen=True)
class ButtonConfig:
    pin: int = _opt(17, "GPIO (BCM) of the button, wired to ground", min=0, max=27)
    pull: str = _opt(
        "up",
        "the Pi's pull resistor on the button's pin: 'up' for a button to ground, "
        "'down' for a button to 3.3 V, 'none' for your own resistor (then set active_high)",
        choices=("up", "down", "none"),
    )
    active_high: bool = _opt(False, "with pull = 'none': the pin reads high while pressed")
    led_pin: int = _opt(
        27, "GPIO (BCM) of the LED (through a resistor); -1 for no LED", min=-1, max=27
    )
    hold_seconds: float = _opt(2.0, "hold this long to stop the print", min=0.5, max=10.0)
    debounce_ms: int = _opt(300, "presses closer than this are one press", min=0, max=5000)
    engine: str = _opt("", "the engine's API: empty for its Unix socket, or http://host:port")


@dataclass(frozen=True)
class ChatConfig:
    channel: str = _opt("", "the Twitch channel to join: its login name, as in twitch.tv/NAME")
    bot: str = _opt("", "the bot account's login name (teletype twitch-login signs it in)")
    client_id: str = _opt("", "Client ID of your application at dev.twitch.tv (type: Public)")
    print_chat: bool = _opt(True, "print every chat line on the Teletype as NAME: TEXT")
    post_button_results: bool = _opt(True, "post text printed for the button or API in chat")
    user_cooldown: float = _opt(60.0, "seconds before the same viewer may !gpt2 again", min=0)
    global_cooldown: float = _opt(10.0, "seconds between two !gpt2 from anyone", min=0)
    bell_cooldown: float = _opt(30.0, "seconds before the same viewer may !bell again", min=0)
    reply_chars: int = _opt(500, "longest text posted in chat (Twitch allows 500)", min=50, max=500)
    bot_is_moderator: bool = _opt(
        False, "the bot is a moderator of the channel: it may send 100, not 20, messages in 30 s"
    )
    engine: str = _opt("", "the engine's API: empty for its Unix socket, or http://host:port")


@dataclass(frozen=True)
class ModerationConfig:
    use_default: bool = _opt(True, "use the blocklist that comes with the appliance")
    blocklist: str = _opt("", "your own blocklist file: one word or phrase a line")
    tries: int = _opt(
        3, "on a blocked word, generate again this many times, then skip", min=0, max=10
    )


@dataclass(frozen=True)
class MotorConfig:
    pin: int = _opt(-1, "GPIO (BCM) of the motor's relay; -1 for no relay", min=-1, max=27)
    active_high: bool = _opt(
        True, "the relay switches on at a high pin; false for modules that switch on low"
    )
    spinup_seconds: float = _opt(
        1.0, "seconds the motor runs before the first character", min=0.0, max=30.0
    )
    idle_seconds: float = _opt(
        60.0, "seconds with nothing to print before the motor is switched off", min=0.1, max=86400
    )
    always_on: bool = _opt(False, "run the motor from the engine's start to its stop")


@dataclass(frozen=True)
class EngineConfig:
    queue_size: int = _opt(8, "jobs waiting for the printer; more get 429", min=1, max=100)
    tcp_host: str = _opt("127.0.0.1", "HTTP API address; empty for the Unix socket only")
    tcp_port: int = _opt(5599, "HTTP API port", min=0, max=65535)
    token: str = _opt("", "API token; required when tcp_host is not loopback", secret=True)
    panel_password: str = _opt(
        "", "the web panel's password (http://NAME.local:PORT/); empty: the API token", secret=True
    )
    overlay_token: str = _opt(
        "",
        "the stream overlay's read-only token; empty: made once, in the state directory",
        secret=True,
    )
    state_dir: str = _opt(
        "", "history and tokens; empty for $STATE_DIRECTORY, /var/lib/teletype-gpt2 or ~/.local"
    )
    runtime_dir: str = _opt("", "the API socket; empty for $RUNTIME_DIRECTORY or /tmp")
    bell_interval: float = _opt(10.0, "seconds between two rings of the bell", min=0.0, max=3600)
    max_paper_seconds: float = _opt(
        600.0, "the longest a job may print; a longer one is refused or cut", min=10.0, max=86400
    )
    status_on_paper: bool = _opt(
        True,
        "print the Pi's name, addresses, model and Twitch state at the first start and "
        "whenever the network changes",
    )

    def tcp_on_loopback(self) -> bool:
        """tcp_host is this machine alone (what other machines cannot reach)."""
        if self.tcp_host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.tcp_host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class SystemConfig:
    # Read at boot by the initramfs (pi-gen-config/stage-teletype/04-read-only), before
    # Python runs: only an uncommented `read_only_root = false` in [system] turns it off.
    read_only_root: bool = _opt(
        True,
        "the root file system read-only under a RAM overlay (a power cut cannot harm it; "
        "the state has its own partition); false to install packages (README), at the next boot",
    )


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    teletype: TeletypeConfig = field(default_factory=TeletypeConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    keyboard: KeyboardConfig = field(default_factory=KeyboardConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    button: ButtonConfig = field(default_factory=ButtonConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    moderation: ModerationConfig = field(default_factory=ModerationConfig)
    motor: MotorConfig = field(default_factory=MotorConfig)
    system: SystemConfig = field(default_factory=SystemConfig)
    # [network] as written: appliance.network.oneshot checks and applies it, as root,
    # at boot. A mistake there is printed on paper and must not stop the
    # engine, so nothing here rejects it.
    network: dict[str, Any] = field(default_factory=dict)
    # Where the values came from ("defaults" or a path), for messages.
    source: str = "defaults"

    def replace(self, section: str, **values: Any) -> Config:
        """A copy with some keys of one section changed (command-line flags)."""
        current = getattr(self, section)
        return dataclasses.replace(self, **{section: dataclasses.replace(current, **values)})


SECTIONS = {
    f.name: f.type for f in dataclasses.fields(Config) if f.name not in ("source", "network")
}


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {name: hints[name] for name in SECTIONS}


def find_config(explicit: Path | None) -> Path | None:
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"{explicit}: no such configuration file")
        return explicit
    return next((p for p in SEARCH_PATHS if p.is_file()), None)


# teletype.toml is a page of settings; anything near this size is a mistake,
# and reading 100 MB would take a Zero 2 W's whole memory.
MAX_CONFIG_BYTES = 1 << 20


def load_config(explicit: Path | None = None) -> Config:
    path = find_config(explicit)
    if path is None:
        return Config()
    config = parse_config(read_capped(path), str(path))
    model = config.model.path
    if model and not Path(model).expanduser().is_absolute():
        # A model copied onto the card beside teletype.toml is named by its
        # file name alone: relative to the file that names it, not to
        # wherever the engine happens to start.
        config = config.replace("model", path=str(path.parent / model))
    return config


def read_capped(path: Path) -> bytes:
    """The file's bytes, at most one more than MAX_CONFIG_BYTES (parse_toml says it is too big)."""
    with path.open("rb") as f:
        return f.read(MAX_CONFIG_BYTES + 1)


SAVE_AS_UTF8 = (
    "save it as UTF-8 (Notepad: File, Save as, Encoding: UTF-8; TextEdit: Format, "
    "Make Plain Text, then UTF-8)"
)


def decode_config(data: bytes, source: str) -> str:
    """The file's text: UTF-8 (with or without Notepad's byte-order mark) or UTF-16 with one."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")  # Notepad's "UTF-16 LE/BE"; the mark says which
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"{source}: not readable as UTF-16 ({e.reason}): {SAVE_AS_UTF8}"
            ) from e
    if b"\x00" in data:  # never in TOML; every other byte of ASCII saved as UTF-16
        raise ConfigError(f"{source}: looks like UTF-16 without a byte-order mark: {SAVE_AS_UTF8}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{source}: is not UTF-8 (byte {data[e.start]:#04x} on line {line}: another code "
            f"page?): {SAVE_AS_UTF8}"
        ) from e


def parse_toml(data: bytes, source: str) -> dict[str, Any]:
    """The file as TOML; every way it can be unreadable is one ConfigError line."""
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{source}: larger than 1 MiB: this is not a settings file (start again from "
            "the template)"
        )
    # tomllib itself accepts CRLF line ends.
    text = decode_config(data, source)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from e
    except RecursionError:
        raise ConfigError(f"{source}: not valid TOML: arrays or tables nested too deeply") from None
    except MemoryError:
        raise ConfigError(f"{source}: too much to read (not enough memory)") from None


def parse_config(data: bytes, source: str) -> Config:
    """Parse and validate; every problem names the file and the key."""
    raw = parse_toml(data, source)
    section_types = _section_types()
    sections: dict[str, Any] = {}
    for name, values in raw.items():
        if name == "network":
            sections[name] = values if isinstance(values, dict) else {}
            continue
        if name not in section_types:
            known = [*SECTIONS, "network"]
            raise ConfigError(f"{source}: unknown section [{name}]{_did_you_mean(name, known)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: {name} must be a section ([{name}]), not a value")
        sections[name] = _build_section(section_types[name], name, values, source)
    return Config(**sections, source=source)


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _build_section(cls: type, section: str, values: dict[str, Any], source: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        where = f"{source}: {section}.{key}"
        if key not in fields:
            raise ConfigError(f"{source}: unknown key {section}.{key}{_did_you_mean(key, fields)}")
        kwargs[key] = _check_value(where, value, hints[key], fields[key].metadata)
    return cls(**kwargs)


_TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def _check_value(where: str, value: Any, kind: type, meta) -> Any:
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind) and not isinstance(value, bool)
    if not ok:
        raise ConfigError(f"{where} must be {_TYPE_NAMES[kind]}, not {value!r}")
    if kind is float:
        value = float(value)
    if meta.get("choices") is not None and value not in meta["choices"]:
        options = ", ".join(repr(c) for c in meta["choices"])
        raise ConfigError(f"{where} must be one of {options}, not {value!r}")
    if meta.get("min") is not None and value < meta["min"]:
        raise ConfigError(f"{where} must be at least {meta['min']}, not {value!r}")
    if meta.get("max") is not None and value > meta["max"]:
        raise ConfigError(f"{where} must be at most {meta['max']}, not {value!r}")
    return value


def render_config(config: Config) -> str:
    """The effective configuration as TOML, secrets masked, each key with its help."""
    lines = [f"# effective configuration (from {config.source})"]
    for name in SECTIONS:
        section = getattr(config, name)
        lines.append(f"\n[{name}]")
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            shown = '"********"' if f.metadata.get("secret") and value else _toml_value(value)
            lines.append(f"{f.name} = {shown}  # {f.metadata.get('help', '')}")
    if config.network:
        lines.append("\n[network]  # applied at boot by teletype-network.service")
        for key, value in config.network.items():
            shown = '"********"' if key == "password" and value else _toml_value(value)
            lines.append(f"{key} = {shown}  # {NETWORK_KEYS.get(key, ('', 'unknown key'))[1]}")
    return "\n".join(lines) + "\n"


TEMPLATE_HEADER = """\
# teletype.toml: the Teletype GPT-2 appliance's settings.
#
# This file is on the SD card's boot partition, so any computer can edit it
# before the Pi's first boot: Notepad, TextEdit or any text editor (save it
# as plain text, UTF-8; Windows line endings are fine). Every setting is
# shown commented out with its default: remove the "# " in front of a line
# and change the value to use it ([network], at the end, is different: fill
# in its values between the quotes). A mistake stops the appliance with a
# message that names the setting (`journalctl -u teletype-engine`, or
# `teletype config` over SSH).
#
# Text goes in "quotes"; true/false and numbers do not.
"""

_SECTION_NOTES = {
    "teletype": "The Teletype and its serial port (/dev/teletype: the Pi's UART or a USB adapter).",
    "model": "The text generator. The defaults suit the embedded model.",
    "history": "The chat lines the Teletype answers.",
    "keyboard": "The Teletype's own keyboard.",
    "engine": "The engine: one process owns the model and the printer; a local API.",
    "button": "The front-panel button and its LED (GPIO numbers, BCM).",
    "chat": "Twitch chat. Set channel, bot and client_id; the Teletype then prints a "
    "sign-in code for the bot account (README: Twitch).",
    "moderation": "The blocklist: words that never reach the paper or the chat.",
    "motor": "The Teletype's motor on a relay (firmware/WIRING.md): on while there is "
    "something to print, off when idle.",
    "system": "The Pi itself. Takes effect at the next boot (the status block on paper "
    "says which mode runs).",
}

# [network]'s keys, for the template and `teletype config`; appliance.network.oneshot checks
# and applies them.
# Each key: (the value an earlier template showed, commented out, help). The
# template now has every key live and empty ("" is "not set" for each), so
# that a value is filled in between the quotes with no "#" to remove; a
# commented-out line with any other value is reported (see commented_out).
NETWORK_KEYS: dict[str, tuple[str, str]] = {
    "country": ('"GB"', "Wi-Fi country, two letters (ISO 3166: GB, US, DE...); the radio stays "
                "off until it is set"),
    "ssid": ('""', "the Wi-Fi network's name"),
    "password": ('""', "its password (8 to 63 characters); moved off this card at the next boot"),
    "open": ("false", "true (no quotes) for a network with no password"),
    "hidden": ("false", "true (no quotes) if the network does not announce its name"),
    "hostname": ('"teletype"', "the Pi's name on the network (then NAME.local)"),
    "ssh": ("true", "OpenSSH's server: true or false, no quotes (empty: on with an ssh_key, "
            "else as Imager or the ssh file left it)"),
    "ssh_key": ('""', "a public key (one line of ~/.ssh/id_ed25519.pub) allowed to log in; "
                'several: ["...", "..."]'),
    "ssh_user": ('""', "whose key it is; empty for the first user (the one Imager or "
                 "userconf.txt made)"),
}  # fmt: skip


NETWORK_NOTE = """\
[network]
# Wi-Fi, the Pi's name and SSH, applied at boot before the network starts
# (teletype-network.service; it is how to set them up without Raspberry Pi
# Imager). Fill in a value between the quotes, with no "#" to remove; empty
# means not set (that part of the Pi is left as it is). true and false go
# without quotes. The password is taken off this card at the next boot, even
# if something here is wrong: the card's boot partition is readable by
# anyone who has it. A mistake is printed on the Teletype and nothing is
# changed."""


def render_template() -> str:
    """The user's teletype.toml: every key commented out at its default, but [network]'s:
    those are live and empty, to be filled in between the quotes (a value typed after a
    "#" would be silently unused, and a password typed there left on the card)."""
    defaults = Config()
    lines = [TEMPLATE_HEADER]
    for name in ("teletype", "model", "history", "keyboard", "button", "chat", "moderation",
                 "engine", "motor", "system"):  # fmt: skip
        section = getattr(defaults, name)
        lines.append(f"[{name}]")
        lines.append(f"# {_SECTION_NOTES[name]}")
        for f in dataclasses.fields(section):
            help_text = f.metadata.get("help", "")
            lines.append(f"# {f.name} = {_toml_value(getattr(section, f.name))}  # {help_text}")
        lines.append("")
    lines.append(NETWORK_NOTE)
    for key, (_, help_text) in NETWORK_KEYS.items():
        lines.append(f'{key} = ""  # {help_text}')
    lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
