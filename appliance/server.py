"""`teletype serve`: start the engine, serve its API, talk to systemd, stop cleanly."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from appliance import notify
from appliance.config import Config
from appliance.durable import fsync_dir
from appliance.errors import ConfigError, PortError

log = logging.getLogger("teletype.serve")
SOCKET_NAME = "engine.sock"


def setup_logging(identifier: str) -> None:
    """To the journal under systemd, to stderr otherwise."""
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER=identifier)
        except ImportError:
            pass
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


SYSTEM_STATE_DIR = Path("/var/lib/teletype-gpt2")  # the units' StateDirectory=


def state_dir(config: Config) -> Path:
    """History and tokens: the config, else systemd's, else the appliance's, else ~/.local.

    `sudo -u teletype teletype twitch-login` on the Pi has no
    StateDirectory= of its own; it finds the units' through /var/lib when
    it may write there.
    """
    chosen = config.engine.state_dir or os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if chosen:
        return Path(chosen)
    if SYSTEM_STATE_DIR.is_dir() and os.access(SYSTEM_STATE_DIR, os.W_OK):
        return SYSTEM_STATE_DIR
    return Path.home() / ".local" / "state" / "teletype-gpt2"


SYSTEM_RUNTIME_DIR = Path("/run/teletype-gpt2")  # the engine unit's RuntimeDirectory=


def runtime_dir(config: Config) -> Path:
    """Where the engine's socket is: the config, else systemd's, else a per-user /tmp folder.

    The clients (chat, button) run without a RuntimeDirectory= of their own,
    so they find the engine's through /run/teletype-gpt2 when it exists.
    """
    chosen = config.engine.runtime_dir or os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if chosen:
        return Path(chosen)
    if SYSTEM_RUNTIME_DIR.is_dir():
        return SYSTEM_RUNTIME_DIR
    return Path(f"/tmp/teletype-gpt2-{os.getuid()}")


def socket_path(config: Config) -> Path:
    return runtime_dir(config) / SOCKET_NAME


def check_exposure(config: Config) -> None:
    """Anything but loopback needs a token: the API can make the Teletype print."""
    host = config.engine.tcp_host
    if not host or not config.engine.tcp_port:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not config.engine.token:
        raise ConfigError(
            f"{config.source}: engine.tcp_host is {host!r}, which other machines can reach; "
            "set engine.token (clients send it as 'Authorization: Bearer TOKEN') or use 127.0.0.1"
        )


def run_serve(config: Config) -> int:
    from appliance.generator import load_generator
    from appliance.teletype import build_printer

    setup_logging("teletype-engine")
    check_exposure(config)
    log.info("loading the model")
    generator = load_generator(config.model)
    printer = build_printer(config.teletype)
    try:
        printer.port.open()
        port_state = "open"
    except PortError as e:
        # Known absent: serve anyway; jobs wait for the port to appear.
        log.warning("%s; jobs will wait for it", e)
        port_state = "offline"
    running = PaperMarker(state_dir(config))
    if running.left_behind():
        log.warning("the last engine did not stop cleanly: the first print starts on a new line")
        printer.discipline.carriage_unknown()
    running.set()
    try:
        code = asyncio.run(_serve(config, generator, printer, port_state))
    finally:
        printer.close()
        generator.close()
    # Only now is the carriage known to be at column 0 (the line finished).
    running.clear()
    return code


class PaperMarker:
    """A file that exists while an engine runs: found at start, the last one died mid-job.

    After kill -9 or a power cut the carriage may be anywhere on its line,
    and a discipline that starts counting at column 0 would overprint it.
    Two small writes an engine lifetime, so an SD card does not mind.
    """

    def __init__(self, directory: Path):
        self.path = directory / "engine.running"

    def left_behind(self) -> bool:
        return self.path.exists()

    def set(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.path.parent)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        fsync_dir(self.path.parent)


async def _serve(config: Config, generator, printer, port_state: str) -> int:
    from aiohttp import web

    from appliance.api import build_app
    from appliance.engine import Engine
    from appliance.teletype.ports import SerialPort

    engine = Engine(config, generator, printer, state_dir(config))
    engine.loop = asyncio.get_running_loop()
    engine.port_state = port_state
    runner = web.AppRunner(build_app(engine, config.engine.token), access_log=None)
    await runner.setup()
    sock = socket_path(config)
    sock.parent.mkdir(parents=True, exist_ok=True)
    sock.unlink(missing_ok=True)
    await web.UnixSite(runner, str(sock)).start()
    os.chmod(sock, 0o660)
    where = [str(sock)]
    if config.engine.tcp_host and config.engine.tcp_port:
        await web.TCPSite(runner, config.engine.tcp_host, config.engine.tcp_port).start()
        where.append(f"http://{config.engine.tcp_host}:{config.engine.tcp_port}")
    log.info("serving on %s", " and ".join(where))

    worker = asyncio.create_task(engine.run_worker())
    if config.keyboard.enabled and isinstance(printer.port, SerialPort):
        threading.Thread(target=engine.read_keyboard, name="keyboard", daemon=True).start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    notify.ready(f"ready; printer {engine.port_state}")
    keepers = [asyncio.create_task(_report_status(engine))]
    interval = notify.watchdog_interval()
    if interval:
        keepers.append(asyncio.create_task(_watchdog(interval)))

    await stop.wait()
    log.info("stopping: finishing the line")
    notify.stopping()
    engine.stopping.set()
    engine.cancel_current()
    # The printer finishes its line (CR LF) after a cancel; give it that long.
    for _ in range(100):
        if engine.current is None:
            break
        await asyncio.sleep(0.1)
    printer.stopping.set()
    for task in (*keepers, worker):
        task.cancel()
    await runner.cleanup()
    sock.unlink(missing_ok=True)
    return 0


async def _watchdog(interval: float) -> None:
    # From the event loop itself: if the loop wedges, the pings stop and
    # systemd restarts us.
    while True:
        notify.watchdog()
        await asyncio.sleep(interval)


async def _report_status(engine) -> None:
    last = None
    while True:
        job = engine.current
        text = (
            f"printing job {job.id} ({job.printed}/{job.max_chars} characters), "
            f"{len(engine.waiting)} waiting; printer {engine.port_state}"
            if job
            else f"idle; printer {engine.port_state}"
        )
        if text != last:
            notify.status(text)
            last = text
        await asyncio.sleep(1.0)
