"""The Teletype says where the appliance is: a short status block on paper.

A headless Pi on a new Wi-Fi has no screen to show its address, and the
Teletype is its screen. The engine prints one block at the first start and
again whenever the network changes (another name, another IPv4 address,
another IPv6 prefix), and once each boot while [network] could not be
applied. A restart on the same network prints nothing. What was printed
last is remembered in the state directory (announced.json).

Nothing secret goes on paper: no token, no password, only what the block's
lines say.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from anyascii import anyascii

from appliance.config import Config
from appliance.durable import write_atomic
from appliance.errors import QueueFull, ShuttingDown, StateError, TooLong
from appliance.network.oneshot import RESULT_PATH, read_result
from appliance.paths import ROOT_MODE_PATH

log = logging.getLogger("teletype.whereabouts")

LOOK_EVERY = 5.0  # seconds between two looks at the network
SETTLE = 15.0  # the same network this long before it is printed (DHCP, IPv6 come in steps)
WAIT_FOR_NETWORK = 60.0  # after a start, how long an address may take before "no network"
# ...unless NetworkManager says sooner that it has brought up all it would at boot.
WAIT_FOR_CHAT = 30.0  # after a start, how long the chat bridge may take to say how it is
MAX_ADDRESSES = 4
AVAHI = Path("/usr/sbin/avahi-daemon")
NM_ONLINE = Path("/usr/bin/nm-online")


# --- the machine's addresses ---------------------------------------------------------


class _SockAddr(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("data", ctypes.c_ubyte * 14)]


class _IfAddrs(ctypes.Structure):
    pass


_IfAddrs._fields_ = [
    ("next", ctypes.POINTER(_IfAddrs)),
    ("name", ctypes.c_char_p),
    ("flags", ctypes.c_uint),
    ("addr", ctypes.POINTER(_SockAddr)),
    ("netmask", ctypes.POINTER(_SockAddr)),
    ("broadaddr", ctypes.POINTER(_SockAddr)),
    ("data", ctypes.c_void_p),
]


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:  # once: find_library runs ldconfig
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _LIBC


def interface_addresses() -> list[tuple[str, str]]:
    """(interface, address) for every IPv4 and IPv6 address, from getifaddrs(3).

    (glibc asks the kernel over netlink: the engine's unit allows AF_NETLINK.)
    """
    libc = _libc()
    head = ctypes.POINTER(_IfAddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        raise OSError(ctypes.get_errno(), "getifaddrs failed")
    found = []
    try:
        entry = head
        while entry:
            item = entry.contents
            if item.addr:
                family = item.addr.contents.family
                raw = ctypes.string_at(item.addr, 28)
                if family == socket.AF_INET:
                    found.append((item.name.decode(), socket.inet_ntop(family, raw[4:8])))
                elif family == socket.AF_INET6:
                    found.append((item.name.decode(), socket.inet_ntop(family, raw[8:24])))
            entry = item.next
    finally:
        libc.freeifaddrs(head)
    return found


def reachable(addresses: list[tuple[str, str]]) -> list[str]:
    """The addresses others can reach: IPv4 first, no loopback, no IPv6 link-local."""
    out4, out6 = [], []
    for _, text in addresses:
        address = ipaddress.ip_address(text.split("%")[0])
        if address.is_loopback or address.is_link_local or address.is_multicast:
            continue
        (out4 if address.version == 4 else out6).append(str(address))
    return sorted(set(out4)) + sorted(set(out6))


async def network_manager_done(nm_online: Path = NM_ONLINE, timeout: float = 10.0) -> bool:
    """NetworkManager's startup is over: every connection it brings up at boot was
    tried (what NetworkManager-wait-online, and so network-online.target, waits for).
    Without an address by then, none is coming for now.

    False where it cannot say (not started yet, not installed, not answering): the
    status block then waits out WAIT_FOR_NETWORK as before.
    """
    try:
        # -t 0: answer at once; -s: the startup, not a connection.
        process = await asyncio.create_subprocess_exec(
            str(nm_online), "-s", "-q", "-t", "0",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    except OSError:
        return False
    try:
        async with asyncio.timeout(timeout):
            status = await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        return False
    if status < 0:  # killed: by the unit's system call filter, as once
        log.warning("nm-online was killed by signal %d", -status)
    return status == 0


# --- the block -----------------------------------------------------------------------


@dataclass(frozen=True)
class Whereabouts:
    hostname: str
    addresses: tuple[str, ...]
    problem: str | None = None  # [network] not applied this boot, and why
    root: str | None = None  # how the root file system runs (None: not an image's boot)

    def fingerprint(self, boot_id: str) -> str:
        """What, changed, is worth paper: the name, the IPv4 addresses, a problem (once
        a boot), and the IPv6 prefixes only on a network without IPv4 (a privacy
        address rotates within its /64, and some providers rotate the prefix daily)."""
        v4 = sorted(a for a in self.addresses if ":" not in a)
        v6 = [] if v4 else sorted({str(ipaddress.ip_network(f"{a}/64", strict=False))
                                   for a in self.addresses if ":" in a})  # fmt: skip
        problem = f"{self.problem}@{boot_id}" if self.problem else ""
        fields = [self.hostname, v4, v6, problem]
        # Switched at a boot by the user: worth paper, to say the switch took.
        return json.dumps([*fields, self.root] if self.root else fields)


def api_line(config: Config, hostname: str, local_name: bool) -> str:
    host, port = config.engine.tcp_host, config.engine.tcp_port
    if not host or not port:
        return "API: ON THIS PI ONLY (ITS UNIX SOCKET)"
    if config.engine.tcp_on_loopback():
        return f"API: ON THIS PI ONLY, {host}:{port} (ENGINE.TCP_HOST FOR THE NETWORK)"
    name = f"{hostname}.local" if local_name else hostname
    where = name if host in ("0.0.0.0", "::") else host
    return f"API: HTTP://{where}:{port}/ WITH THE TOKEN IN TELETYPE.TOML"


# The bridge's own words, as printed: two lines of paper at most. Transliterated first,
# since one character may spell out as many (a 300-character state made 156 lines).
MAX_CHAT_STATE = 130


def twitch_line(config: Config, chat_state: str | None) -> str:
    if chat_state is not None:
        spelled = " ".join(anyascii(chat_state).split())
        if len(spelled) > MAX_CHAT_STATE:
            spelled = spelled[: MAX_CHAT_STATE - 3].rstrip() + "..."
        return f"TWITCH: {spelled}"
    if not config.chat.channel:
        return "TWITCH: NOT SET UP ([CHAT] IN TELETYPE.TOML)"
    return f"TWITCH: #{config.chat.channel}, THE BRIDGE IS STARTING"


def status_block(where: Whereabouts, config: Config, model: str, chat_state: str | None,
                 local_name: bool) -> str:  # fmt: skip
    """The lines on paper (upper case: a Model 33 has nothing else)."""
    name = where.hostname + (f" ({where.hostname}.local)" if local_name else "")
    lines = ["TELETYPE GPT-2 STATUS", f"NAME: {name}"]
    if where.addresses:
        lines += [f"ADDRESS: {a}" for a in where.addresses[:MAX_ADDRESSES]]
    else:
        lines.append("ADDRESS: NONE YET (NO NETWORK; [NETWORK] IN TELETYPE.TOML SETS UP WI-FI)")
    if where.problem:
        lines.append(f"NETWORK SETTINGS NOT APPLIED: {where.problem}")
    lines.append(f"MODEL: {Path(model).name}")
    lines.append(twitch_line(config, chat_state))
    lines.append(api_line(config, where.hostname, local_name))
    if where.root:
        lines.append(f"ROOT: {where.root}")
    return "\n".join(line.upper() for line in lines) + "\n"


# --- remembering what was printed ----------------------------------------------------


class Announced:
    """The fingerprint last printed, in the state directory."""

    def __init__(self, path: Path):
        self.path = path

    def last(self) -> str | None:
        try:
            value = json.loads(self.path.read_text(encoding="utf-8")).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None

    def remember(self, fingerprint: str) -> None:
        write_atomic(self.path, json.dumps({"fingerprint": fingerprint}).encode())


def current_hostname() -> str:
    """The name the Pi has now: /etc/hostname (the engine's own copy of the kernel's
    is taken when it starts, in its namespace), else the kernel's."""
    try:
        name = Path("/etc/hostname").read_text().strip()
    except OSError:
        name = ""
    return name or socket.gethostname()


def root_mode(path: Path = ROOT_MODE_PATH) -> str | None:
    """The initramfs's line on how the root runs (at most one short line), or None."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    words = " ".join(text.split())[:100]
    return words or None


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


# --- the engine's task ---------------------------------------------------------------


async def keep_announcing(
    engine,
    state_dir: Path,
    *,
    addresses: Callable[[], list[tuple[str, str]]] = interface_addresses,
    hostname: Callable[[], str] = current_hostname,
    network_done: Callable[[], Awaitable[bool]] = network_manager_done,
    result_path: Path = RESULT_PATH,
    root_mode_path: Path = ROOT_MODE_PATH,
    every: float = LOOK_EVERY,
    settle: float = SETTLE,
    wait_for_network: float = WAIT_FOR_NETWORK,
    wait_for_chat: float = WAIT_FOR_CHAT,
) -> None:
    """Look at the network every few seconds; print the block when it settles on a change."""
    config: Config = engine.config
    announced = Announced(state_dir / "announced.json")
    started = time.monotonic()
    seen: Whereabouts | None = None
    seen_since = started
    this_boot = boot_id()
    last = announced.last()
    # The block went out saying the bridge was starting (it was slower than
    # wait_for_chat, as under load): its state goes on paper when it comes.
    bridge_owed = False
    network_started = False  # NetworkManager's startup was over at some look
    while True:
        if bridge_owed and engine.chat_state is not None:
            line = twitch_line(config, engine.chat_state).upper() + "\n"
            try:
                await engine.submit(engine.new_print(line, source="system"))
            except (QueueFull, ShuttingDown, StateError, TooLong) as e:
                log.info("the bridge's state waits: %s", e)
            else:
                log.info("on paper: %s", line.strip())
                bridge_owed = False
        try:
            outcome = read_result(result_path) or {}
            now = Whereabouts(hostname(), tuple(reachable(addresses())), outcome.get("problem"),
                              root_mode(root_mode_path))  # fmt: skip
        except (OSError, ValueError) as e:  # the network's moment: worth a retry
            # (A bug is not: it raises, and the task's end is in the engine's log.)
            log.warning("cannot read the network's addresses: %s", e)
            await asyncio.sleep(every * 6)
            continue
        moment = time.monotonic()
        if now != seen:
            seen, seen_since = now, moment
        up_for = moment - started
        settled = moment - seen_since >= settle
        no_address_yet = not now.addresses and up_for < wait_for_network
        if no_address_yet and not network_started:
            network_started = await network_done()
            if network_started:
                log.info("no address, and NetworkManager has brought up all it would")
        waiting = (no_address_yet and not network_started) or (
            config.chat.channel and engine.chat_state is None and up_for < wait_for_chat
        )
        fingerprint = now.fingerprint(this_boot)
        if settled and not waiting and fingerprint != last:
            block = status_block(now, config, str(engine.generator.model_path),
                                 engine.chat_state, AVAHI.exists())  # fmt: skip
            try:
                await engine.submit(engine.new_print(block, source="system"))
            except (QueueFull, ShuttingDown, StateError, TooLong) as e:
                log.info("the status block waits: %s", e)
            else:
                log.info("status on paper: %s", "; ".join(block.splitlines()[1:]))
                last = fingerprint
                bridge_owed = bool(config.chat.channel) and engine.chat_state is None
                try:
                    announced.remember(fingerprint)
                except OSError as e:  # printed again after a restart, no worse
                    log.warning("cannot remember the status block: %s", e)
        await asyncio.sleep(every)
