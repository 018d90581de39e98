"""image-gateway: serve pictures (the default command), check the settings, sign URLs,
move aliases to this deployment's Redis names."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable

from gateway import server
from gateway.config import Config, ConfigError
from gateway.config_load import load
from gateway.variants.spec import check_presets
from gateway.web.signing import UrlSigner

EPILOG = """\
examples:
  image-gateway --config config/gateway.toml    serve (same as: serve --config ...)
  image-gateway check-config                    exit 0 if the settings are usable, else 2
  image-gateway sign /images/abc.png            print the path signed with signing.keys
  image-gateway sign --ttl 3600 /images/a.png   ... that stops working in an hour
  image-gateway migrate-aliases                 copy aliases from before the upgrade to
                                                this deployment's names (never overwrites)
"""


def _serve(config: Config, args: argparse.Namespace) -> int:
    return server.run(config)


def _check_config(config: Config, args: argparse.Namespace) -> int:
    print("image-gateway: config ok")
    return 0


def _sign(config: Config, args: argparse.Namespace) -> int:
    if not config.signing.keys:
        print("image-gateway: signing.keys is empty: nothing to sign with", file=sys.stderr)
        return 2
    signer = UrlSigner(config.signing.keys)
    expires_at = int(time.time()) + args.ttl if args.ttl is not None else None
    for path in args.paths:
        print(signer.sign(path, expires_at))
    return 0


def _migrate_aliases(config: Config, args: argparse.Namespace) -> int:
    if not config.redis.configured:
        print("image-gateway: redis.url is not set: no aliases to migrate", file=sys.stderr)
        return 2
    # Imported here: the other commands (and the supervisor) stay free of the server stack.
    from gateway.cluster.redis import REDIS_ERRORS, keys_for
    from gateway.web.app import migrate_aliases

    keys = keys_for(config)
    print(f"image-gateway: {keys.legacy_user('*')} -> {keys.user('*')}")
    try:
        done = asyncio.run(migrate_aliases(config))
    except REDIS_ERRORS as exc:
        print(f"image-gateway: redis failed ({type(exc).__name__}); nothing is overwritten, "
              "so running it again is safe", file=sys.stderr)
        return 1
    for name, reason in done.skipped:  # repr: a key name from Redis may hold anything
        print(f"skipped {name!r}: {reason}")
    print(f"image-gateway: {len(done.copied)} copied, {len(done.kept)} already set (kept), "
          f"{len(done.skipped)} skipped")
    return 0


COMMANDS: dict[str, tuple[Callable[[Config, argparse.Namespace], int], str]] = {
    "serve": (_serve, "serve HTTP until SIGTERM (the default when no command is given)"),
    "check-config": (_check_config, "validate the settings and exit: 0 if usable, else 2"),
    "sign": (_sign, "print each PATH with a signature made with the first signing.keys entry"),
    "migrate-aliases": (_migrate_aliases, "copy every valid alias stored under its name "
                        "from before the upgrade to this deployment's name, never "
                        "overwriting; report the invalid ones"),
}


def _seconds(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= 10 * 365 * 86400:
        raise argparse.ArgumentTypeError("a whole number of seconds, 1 to 10 years")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="image-gateway", description=__doc__, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    parser.add_argument("--check-config", action="store_true",
                        help="the same as the check-config command")
    # The option is accepted after the command too; SUPPRESS keeps a subcommand's
    # absent --config from overwriting one given before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="TOML settings file")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        sub = commands.add_parser(name, parents=[common], help=summary, description=summary)
        if name == "sign":
            sub.add_argument("paths", nargs="+", metavar="PATH",
                             help="path and query to sign, e.g. /images/abc.png?w=64")
            sub.add_argument("--ttl", type=_seconds, metavar="SECONDS",
                             help="the link expires SECONDS from now (exp=, signed)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.check_config and args.command not in (None, "check-config"):
        parser.error(f"--check-config does not go with the {args.command} command")
    command = "check-config" if args.check_config else args.command or "serve"
    path = args.config
    if command == "sign" and path is None:
        path = os.environ.get("GATEWAY_CONFIG")  # where the old signing command looked
    try:
        config = load(path, checks=(check_presets,))
    except ConfigError as exc:
        print(f"image-gateway: config error: {exc}", file=sys.stderr)
        return 2
    run, _ = COMMANDS[command]
    return run(config, args)


if __name__ == "__main__":
    sys.exit(main())
