"""The ``selfless`` command: ``serve`` runs the platform; every other command is a client of its public
HTTP API, signed with the same credentials any AWS SDK would use (no back doors)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from selfless.config import Settings, SettingsError


@click.group()
@click.version_option(package_name="selfless")
def main() -> None:
    """selfless: a self-hosted serverless platform that speaks the AWS Lambda API."""


@main.command()
@click.option("--host", default=None, help="Address to listen on [SELFLESS_HOST, default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port to listen on [SELFLESS_PORT, default 9400].")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where state lives [SELFLESS_DATA_DIR, default ./.selfless].",
)
@click.option("--keep-alive", type=float, default=None, help="Seconds an idle environment is kept [300].")
def serve(host: str | None, port: int | None, data_dir: Path | None, keep_alive: float | None) -> None:
    """Run the platform in the foreground until SIGTERM or Ctrl-C."""
    from selfless.server import run

    try:
        settings = Settings.from_env(
            os.environ, host=host, port=port, data_dir=data_dir, keep_alive_s=keep_alive
        )
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        run(settings)
    except OSError as exc:
        click.echo(f"selfless: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
