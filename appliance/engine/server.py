"""`teletype serve`: start the engine, serve its API, talk to systemd, stop cleanly."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Protocol, TextIO

from appliance import notify
from appliance.config import Config
from appliance.durable import fsync_dir
from appliance.errors import ConfigError, ModelError, PortError, StartupError
from appliance.logs import setup_logging
from appliance.paths import socket_path, state_dir

log = logging.getLogger("teletype.serve")
STOP_GRACE = 1.0  # seconds for open requests to end once the engine has answered them


class Front(Protocol):
    """A terminal in front of the engine (the demo's): where a virtual Teletype draws, and
    what runs beside the API until `stop` is set (it may take SIGINT for itself)."""

    screen: TextIO

    async def run(self, engine, stop: asyncio.Event) -> None: ...


def check_exposure(config: Config) -> None:
    """Anything but loopback needs a token: the API can make the Teletype print."""
    host = config.engine.tcp_host
    if not host or not config.engine.tcp_port:
        return
    if not config.engine.tcp_on_loopback() and not config.engine.token:
        raise ConfigError(
            f"{config.source}: engine.tcp_host is {host!r}, which other machines can reach; "
            "set engine.token (clients send it as 'Authorization: Bearer TOKEN') or use 127.0.0.1"
        )


def run_serve(config: Config, front: Front | None = None, log_file: Path | None = None) -> int:
    """The engine until SIGTERM or SIGINT. `front` (the demo's terminal) draws the paper
    of a virtual Teletype (its `screen`) and runs beside the API (`front.run`)."""
    from appliance.engine.generator import load_generator
    from appliance.teletype import build_printer

    setup_logging("teletype-engine", to=log_file)
    check_exposure(config)
    log.info("loading the model")
    try:
        generator = load_generator(config.model)
    except ModelError as e:
        # A headless Pi talks through its paper: a model that is missing or
        # too big for the board is said there too, once (exit 78 is not
        # restarted), not only in a journal nobody reads.
        say_on_paper(config, f"THE ENGINE DID NOT START: {e}")
        raise
    printer = build_printer(config.teletype, out=front.screen if front else None)
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
    try:
        running.set()
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            # A full card: the engine starts anyway, and its status says what cannot be saved.
            log.error("cannot mark the engine as running in %s: %s", running.path.parent, e)
        else:
            raise StartupError(
                f"cannot write the state directory {running.path.parent}: {e.strerror or e} "
                "(engine.state_dir in the config)"
            ) from e
    try:
        code = asyncio.run(_serve(config, generator, printer, port_state, front))
    finally:
        printer.close()
        generator.close()
    # Only now is the carriage known to be at column 0 (the line finished).
    running.clear()
    return code


def say_on_paper(config: Config, line: str) -> None:
    """One line on the Teletype from a new line, or nothing if the port is not there."""
    from appliance.teletype import build_printer

    printer = build_printer(config.teletype)
    try:
        printer.port.open()
        printer.discipline.carriage_unknown()
        printer.print_text(line + "\n")
    except (PortError, OSError) as e:
        log.warning("could not say it on paper: %s", e)
    finally:
        printer.close()


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


async def _serve(
    config: Config, generator, printer, port_state: str, front: Front | None = None
) -> int:
    from appliance.engine.api import build_app
    from appliance.engine.connections import ConnectionGuard, default_limit, raise_file_limit
    from appliance.engine.engine import Engine
    from appliance.engine.motor import open_motor
    from appliance.teletype.ports import SerialPort

    engine = Engine(
        config, generator, printer, state_dir(config), open_motor(config.motor), port_state
    )
    engine.bind_loop(asyncio.get_running_loop())
    from appliance.engine.overlay import overlay_token

    overlay = overlay_token(config.engine.overlay_token, state_dir(config))
    app = build_app(
        engine, config.engine.token, allowed_hosts(config), config.engine.panel_password,
        overlay_token=overlay,
    )  # fmt: skip
    # A cap on connections well under the file limit, and a deadline for a
    # request's head: idle sockets can no longer starve the real clients.
    guard = ConnectionGuard(limit=default_limit(raise_file_limit()), log=log)
    guard.install(app)
    runner = make_runner(app)
    await runner.setup()
    try:
        where = await _start_sites(runner, guard, config)
    except BaseException:
        await runner.cleanup()
        raise
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
    if config.engine.status_on_paper:
        from appliance.engine.whereabouts import keep_announcing

        keepers.append(asyncio.create_task(keep_announcing(engine, state_dir(config))))
    if front is not None:  # after the handlers above: its own for SIGINT replaces ours
        keepers.append(asyncio.create_task(front.run(engine, stop)))
    interval = notify.watchdog_interval()
    if interval:
        keepers.append(asyncio.create_task(_watchdog(interval)))
    for keeper in keepers:
        keeper.add_done_callback(_said_if_failed)

    await stop.wait()
    waiting = len(engine.waiting)
    log.info("stopping: finishing the line; %d waiting job(s) kept for the next start", waiting)
    notify.stopping()
    # Event streams end and waiting clients are answered (503) at once; the
    # job printing is cancelled, and the printer finishes its line.
    engine.shut_down()
    for _ in range(200):
        if engine.current is None:
            break
        await asyncio.sleep(0.05)
    printer.stopping.set()
    for task in (*keepers, worker):
        task.cancel()
    engine.motor.close()  # the line is finished: the motor may stop
    await runner.cleanup()
    await engine.close()  # the journal's last write is on the card
    socket_path(config).unlink(missing_ok=True)
    return 0


def make_runner(app):
    """The engine's aiohttp runner: no access log, a short keep-alive, bad requests summed."""
    from aiohttp import web

    from appliance.engine.connections import KEEPALIVE_TIMEOUT
    from appliance.engine.httplog import server_logger

    return web.AppRunner(
        app,
        access_log=None,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        # Requests still open after the engine has answered them all (503)
        # get this long; aiohttp's own default is a minute.
        shutdown_timeout=STOP_GRACE,
        logger=server_logger(summary_to=log),
    )


async def _start_sites(runner, guard, config: Config) -> list[str]:
    """The Unix socket, and TCP if configured; StartupError (one line) if either cannot be had."""
    from appliance.engine.connections import GuardedTCPSite, GuardedUnixSite

    sock = socket_path(config)
    try:
        sock.parent.mkdir(parents=True, exist_ok=True)
        sock.unlink(missing_ok=True)
        await GuardedUnixSite(runner, guard, str(sock)).start()
        os.chmod(sock, 0o660)
    except OSError as e:
        raise StartupError(
            f"cannot make the engine's socket {sock}: {e.strerror or e} "
            "(engine.runtime_dir in the config)"
        ) from e
    where = [str(sock)]
    host, port = config.engine.tcp_host, config.engine.tcp_port
    if host and port:
        try:
            await GuardedTCPSite(runner, guard, host, port).start()
        except OSError as e:
            raise StartupError(
                f"cannot serve on {host}:{port}: {e.strerror or e} "
                "(another program has the port? engine.tcp_port in the config)"
            ) from e
        where.append(f"http://{host}:{port}")
    return where


def allowed_hosts(config: Config) -> set[str]:
    """The names a browser may call the engine by (the Host header): a page that
    rebinds its own name to this machine's address is refused."""
    import socket

    names = {"localhost", "127.0.0.1", "[::1]"}
    hostname = socket.gethostname()
    if hostname:
        names |= {hostname.lower(), f"{hostname.lower()}.local"}
    if config.engine.tcp_host:
        names.add(config.engine.tcp_host.lower())
    return names


def _said_if_failed(task: asyncio.Task) -> None:
    """A keeper that ended on a bug says so in the journal, traceback and all, at once."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped", task.get_coro().__name__, exc_info=task.exception())


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
