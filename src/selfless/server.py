"""``selfless serve``: run the App until SIGTERM/SIGINT, then shut down in order within a deadline."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from selfless.app import App, default_credentials_hint
from selfless.config import Settings

log = logging.getLogger("selfless")


async def serve(settings: Settings) -> None:
    app = App(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        host, port = await app.start()
    except BaseException:
        # Undo what did start, but the reason start failed is what the user needs to see.
        try:
            await app.close()
        except Exception as exc:
            log.warning("cleaning up after a failed start: %s", exc)
        raise
    print(f"selfless listening on http://{host}:{port} (data dir {settings.data_dir})", flush=True)
    print(app.describe(), flush=True)
    if app.created_credentials:
        print(
            f"generated an admin key in {settings.data_dir / 'credentials'} (profile selfless); use it with:\n"
            + default_credentials_hint(settings),
            flush=True,
        )
    await stop.wait()
    print("selfless: shutting down", flush=True)
    await app.close()
    print("selfless: stopped", flush=True)


def run(settings: Settings) -> None:
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
