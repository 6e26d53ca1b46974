"""``dicomweb-gateway``: serve, echo the configured PACS, or run the demo.

Every setting can also come from a TOML file (``--config``) or from
``DICOMWEB_GATEWAY_*`` environment variables; the command-line options below
override both.  ``docs/configuration.md`` lists them all.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from gateway import __version__
from gateway.config import SETTINGS_HELP, ConfigError, PacsConfig, Settings, load_settings
from gateway.logging_setup import configure_logging
from gateway.malloc_tuning import keep_freed_memory


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument(
        "--pacs",
        metavar="AET@HOST:PORT",
        action="append",
        help="PACS to forward to (repeat for several; the first is the default). "
        + SETTINGS_HELP["pacs"],
    )
    parser.add_argument("--calling-aet", metavar="AET", help=SETTINGS_HELP["calling_aet"])
    parser.add_argument("--log-level", metavar="LEVEL", help=SETTINGS_HELP["log_level"])


def _http(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help=SETTINGS_HELP["host"])
    parser.add_argument("--port", type=int, help=SETTINGS_HELP["port"])
    parser.add_argument("--base-path", metavar="PATH", help=SETTINGS_HELP["base_path"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomweb-gateway",
        description="DICOMweb (QIDO-RS, WADO-RS, STOW-RS) in front of a DIMSE-only PACS.",
        epilog="Settings: " + "; ".join(f"{k}: {v}" for k, v in SETTINGS_HELP.items()),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="Serve DICOMweb in front of the configured PACS.")
    _common(serve)
    _http(serve)
    echo = sub.add_parser("echo", help="C-ECHO every configured PACS and report the round trip.")
    _common(echo)
    demo = sub.add_parser(
        "demo",
        help="Start a demo PACS seeded with sample studies and serve the gateway in front of it.",
    )
    _common(demo)
    _http(demo)
    demo.add_argument("--ct-slices", type=int, default=40, help="Slices in the demo CT series.")
    return parser


def _settings(args: argparse.Namespace, pacs: tuple[PacsConfig, ...] | None = None) -> Settings:
    if pacs is None and getattr(args, "pacs", None):
        pacs = tuple(
            PacsConfig.parse(spec, name="default" if i == 0 else f"pacs{i}")
            for i, spec in enumerate(args.pacs)
        )
    return load_settings(
        args.config,
        pacs=pacs,
        calling_aet=args.calling_aet,
        log_level=args.log_level,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        base_path=getattr(args, "base_path", None),
    )


def read_larger_chunks() -> None:
    """Hypercorn reads a connection 64 KiB at a time (``MAX_RECV``, a module
    constant with no setting).  asyncio's stream buffer behind it holds a few
    hundred KiB, so 64 KiB reads cost one copy and one shift of the rest per
    read, and one pass through h11 and the ASGI queue each: a bare Hypercorn
    app reading a 52 MB STOW body used 107-121 ms of CPU with them, 70-83 ms
    with 1 MiB reads (docs/benchmarks.md, issue 4).  A read returns what
    asyncio has buffered (up to about 350 KiB), and Hypercorn queues up to
    ``max_app_queue_size`` (10) of them for a request that does not read: a
    stalled upload holds up to about 3.5 MiB instead of 0.64 MiB.
    """
    import hypercorn.asyncio.tcp_server as tcp_server

    if getattr(tcp_server, "MAX_RECV", None) == 1 << 16:
        tcp_server.MAX_RECV = 1 << 20


async def _serve(settings: Settings, banner: str = "") -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from gateway.web.app import create_app

    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.accesslog = None  # the gateway logs one access line itself (gateway.access)
    # Hypercorn's own messages through our handler (same format, JSON included).
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 75
    read_larger_chunks()
    keep_freed_memory()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if banner:
        print(banner, flush=True)
    await serve(create_app(settings), config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


async def _echo(settings: Settings) -> int:
    from gateway.services.errors import GatewayError
    from gateway.services.pacs import PacsDirectory

    directory = PacsDirectory(settings)
    failures = 0
    try:
        for client in directory.clients:
            c = client.config
            try:
                seconds = await client.echo()
                where = f"{c.name}: {c.aet}@{c.host}:{c.port}"
                print(f"{where} answered C-ECHO in {seconds * 1000:.2f} ms")
            except GatewayError as exc:
                failures += 1
                print(f"{c.name}: {c.aet}@{c.host}:{c.port} FAILED: {exc}")
    finally:
        await directory.close()
    return 1 if failures else 0


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo.pacs import DEMO_HEADER_ATTRIBUTES, start_demo_pacs

    settings = _settings(args)
    print("Starting the demo PACS (pynetdicom qrscp) and storing sample studies...", flush=True)
    pacs = start_demo_pacs(ct_slices=args.ct_slices, gateway_aet=settings.calling_aet)
    try:
        demo = PacsConfig(
            name="demo",
            aet=pacs.aet,
            host=pacs.host,
            port=pacs.port,
            header_attributes=DEMO_HEADER_ATTRIBUTES,
        )
        settings = _settings(args, pacs=(demo,))
        url = f"http://{settings.host}:{settings.port}{settings.base_path}"
        banner = (
            f"Demo PACS {pacs.aet} on {pacs.host}:{pacs.port} holds "
            f"{len(pacs.manifest.instances)} instances.\n"
            f"DICOMweb gateway: {url}\n"
            f"Try:  curl -s '{url}/studies' | python3 -m json.tool\n"
            "Stop with Ctrl-C."
        )
        asyncio.run(_serve(settings, banner))
    finally:
        pacs.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            configure_logging(args.log_level or "INFO", _settings(args).log_format)
            logging.getLogger("pynetdicom").setLevel(logging.WARNING)
            return _demo(args)
        settings = _settings(args)
        configure_logging(settings.log_level, settings.log_format)
        if not settings.pacs:
            print("no PACS configured: use --pacs AET@HOST:PORT, DICOMWEB_GATEWAY_PACS or --config")
            return 2
        if args.command == "echo":
            return asyncio.run(_echo(settings))
        asyncio.run(_serve(settings))
        return 0
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
