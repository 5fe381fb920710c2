"""`teletype <command>`: the appliance's one console command."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

from appliance.config import Config, load_config, render_config
from appliance.console import print_cancellable
from appliance.errors import ApplianceError, ConfigError


def _settings(args) -> Config:
    """The config file, then the common flags on top of it."""
    config = load_config(args.config)
    teletype = {}
    if getattr(args, "port", None):
        teletype["port"] = args.port
    if getattr(args, "profile", None):
        teletype["profile"] = args.profile
    if getattr(args, "speed", None):
        teletype["speed"] = args.speed
    if teletype:
        config = config.replace("teletype", **teletype)
    model = {}
    if getattr(args, "model", None):
        model["path"] = str(args.model)
    if getattr(args, "seed", None) is not None:
        model["seed"] = args.seed
    if getattr(args, "max_chars", None):
        model["max_chars"] = args.max_chars
    if model:
        config = config.replace("model", **model)
    return config


def cmd_config(args) -> int:
    if args.template:
        from appliance.config import render_template

        sys.stdout.write(render_template())
    else:
        sys.stdout.write(render_config(load_config(args.config)))
    return 0


def cmd_generate(args) -> int:
    """The seed's gen.py: text from a prompt, to the terminal or onto the Teletype.

    The same reply as the engine would print: the blocklist applies, and
    an empty reply is tried again, then an error (exit 1), never silence.
    """
    config = _settings(args)
    from appliance.engine.generator import load_generator
    from appliance.engine.replies import Replies

    # The port first: a wrong one is said at once, not after the model loads.
    printer = _open_printer(config) if args.port else None
    try:
        generator = load_generator(config.model)
    except BaseException:
        if printer is not None:
            printer.close()
        raise
    try:
        replies = Replies(config, generator)
        pieces = replies.stream(replies.prompt(None, args.prompt or ""))
        if printer is not None:
            cancel = threading.Event()
            try:
                print_cancellable(printer, replies.for_printer(pieces, cancel), cancel, words=True)
            finally:
                printer.close()
        else:
            _write_out(pieces)
    finally:
        generator.close()
    return 0


def _write_out(pieces) -> None:
    """To standard output; a reader that stops early (`| head`) ends it quietly."""
    try:
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would complain again flushing stdout at exit: point it at nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def cmd_print(args) -> int:
    config = _settings(args)
    printer = _open_printer(config)
    try:
        text = sys.stdin.read() if args.text in (None, "-") else args.text
        print_cancellable(printer, [text])
    finally:
        printer.close()
    return 0


def _open_printer(config: Config):
    """The printer with its port open now: a missing, mistyped or non-serial port is a
    PortError (one line, exit 1) here, where the printer itself would wait for it to
    come back (what `serve` wants for an unplugged adapter, not a command run by hand)."""
    from appliance.teletype import build_printer

    printer = build_printer(config.teletype)
    try:
        printer.port.open()
    except BaseException:
        printer.close()
        raise
    return printer


def cmd_demo(args) -> int:
    from appliance.demo import run_demo

    return run_demo(_settings(args))


def cmd_serve(args) -> int:
    from appliance.engine.server import run_serve

    return run_serve(_settings(args))


def cmd_button(args) -> int:
    from appliance.button import run_button

    return run_button(load_config(args.config))


def cmd_chat(args) -> int:
    if args.configured:
        try:
            config = load_config(args.config)
        except ConfigError:
            # Not a skip: the bridge itself starts and fails with the error,
            # so the unit shows as failed with the reason in its status.
            return 0
        # 1 skips the unit cleanly: a Teletype without Twitch never starts the bridge.
        return 0 if config.chat.channel else 1
    try:
        config = load_config(args.config)
    except ConfigError as e:
        from appliance.chat.service import say_config_error

        say_config_error(e)  # on paper too, if the engine runs; then exit 78
        raise
    from appliance.chat.service import config_error_mended, run_chat

    config_error_mended(config)
    return run_chat(config)


def cmd_network(args) -> int:
    from appliance.logs import setup_logging
    from appliance.network.machine import Machine
    from appliance.network.oneshot import RESULT_PATH, run_network

    setup_logging("teletype-network")
    if args.root is None or args.root.resolve() == Path("/"):
        return run_network(args.config, args.apply, Machine(), RESULT_PATH)
    # A card's root mounted here: its files only, and its own teletype.toml.
    config = args.config or args.root / "boot/firmware/teletype.toml"
    return run_network(config, args.apply, Machine(root=args.root, live=False), None)


def cmd_twitch_login(args) -> int:
    from appliance.chat.service import run_login

    return run_login(load_config(args.config))


def _config_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="the TOML file (default: the usual places)")


def _port_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", help="serial device (/dev/ttyUSB0), 'virtual', or 'file:PATH'")
    p.add_argument("--profile", help="asr33, model28 or ita2")


def _common(p: argparse.ArgumentParser, port: bool = True) -> None:
    _config_flag(p)
    if port:
        _port_flags(p)
    p.add_argument("--model", type=Path, help="a GGUF file (default: the embedded model)")
    p.add_argument("--seed", type=int, help="sampling seed, for the same text again")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="teletype", description="GPT-2 on a Teletype: the appliance's commands."
    )
    from appliance import __version__

    top.add_argument("--version", action="version", version=f"teletype-gpt2 {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "demo",
        help="the appliance on a virtual Teletype in this terminal, with its panel (no hardware)",
    )
    _common(p, port=False)
    p.add_argument("--profile", help="asr33, model28 or ita2")
    p.add_argument(
        "--speed", type=float, help="speed factor of the virtual Teletype (5: five times as fast)"
    )
    p.set_defaults(run=cmd_demo)

    p = commands.add_parser("generate", help="text from a prompt (to the terminal or --port)")
    p.add_argument("prompt", nargs="?", help="what the text should follow")
    _common(p)
    p.add_argument(
        "--max-chars",
        type=int,
        help="stop at the first sentence end past this many characters (one that runs on "
        "is closed after a whole word, with a period)",
    )
    p.set_defaults(run=cmd_generate)

    p = commands.add_parser("print", help="print text on the Teletype (- for standard input)")
    p.add_argument("text", nargs="?", help="the text, or - to read standard input")
    _config_flag(p)
    _port_flags(p)
    p.set_defaults(run=cmd_print)

    p = commands.add_parser("serve", help="the engine: model, printer, history, queue, local API")
    _common(p)
    p.set_defaults(run=cmd_serve)

    p = commands.add_parser("button", help="the front-panel button and LED (a client of serve)")
    _config_flag(p)
    p.set_defaults(run=cmd_button)

    p = commands.add_parser("chat", help="the Twitch chat bridge: !gpt2 and the last chat lines")
    _config_flag(p)
    p.add_argument(
        "--configured",
        action="store_true",
        help="only say (exit 0 or 1) whether [chat] names a channel (the unit's ExecCondition=)",
    )
    p.set_defaults(run=cmd_chat)

    p = commands.add_parser(
        "twitch-login", help="sign the bot's Twitch account in (a code to enter on any phone)"
    )
    _config_flag(p)
    p.set_defaults(run=cmd_twitch_login)

    p = commands.add_parser(
        "network", help="check teletype.toml's [network] (Wi-Fi, hostname, SSH); --apply as root"
    )
    _config_flag(p)
    p.add_argument(
        "--apply",
        action="store_true",
        help="apply it, and move the Wi-Fi password off the card (teletype-network.service)",
    )
    p.add_argument("--root", type=Path, help="a root file system mounted elsewhere (default /)")
    p.set_defaults(run=cmd_network)

    p = commands.add_parser("config", help="print the effective configuration (secrets masked)")
    _config_flag(p)
    p.add_argument(
        "--template", action="store_true", help="print a teletype.toml with every key commented"
    )
    p.set_defaults(run=cmd_config)
    # `teletype COMMAND --help` opens with the same one line `teletype --help` lists.
    for action in commands._choices_actions:
        commands.choices[action.dest].description = action.help
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except ApplianceError as e:
        # One line, never a traceback; 78 (EX_CONFIG) for what a person must
        # fix, which the units do not restart on.
        print(f"teletype {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
