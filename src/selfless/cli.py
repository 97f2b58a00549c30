"""The ``selfless`` command: ``serve`` runs the platform; every other command is a client of its public
HTTP API, signed with the same credentials any AWS SDK would use (no back doors)."""

from __future__ import annotations

import base64
import binascii
import configparser
import functools
import io
import json
import os
import re
import stat
import sys
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import boto3.session
import click
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
    WaiterError,
)
from rich import box
from rich.console import Console
from rich.table import Table

from selfless.config import DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_PORT, Settings, SettingsError


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
@click.option(
    "--sandbox",
    type=click.Choice(["linux", "process"]),
    default=None,
    help="Isolation backend [SELFLESS_SANDBOX; default linux where available (root on Linux), else process].",
)
def serve(
    host: str | None, port: int | None, data_dir: Path | None, keep_alive: float | None, sandbox: str | None
) -> None:
    """Run the platform in the foreground until SIGTERM or Ctrl-C."""
    from selfless.server import run

    try:
        settings = Settings.from_env(
            os.environ, host=host, port=port, data_dir=data_dir, keep_alive_s=keep_alive, sandbox=sandbox
        )
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    from selfless.sandbox.linux import SandboxUnavailable

    try:
        run(settings)
    except (OSError, SandboxUnavailable) as exc:
        click.echo(f"selfless: {exc}", err=True)
        sys.exit(1)


# --- client commands ----------------------------------------------------------------------------------
#
# Everything below talks to a running server through boto3 only, exactly as any AWS SDK user would: the
# one file it reads is the credentials file ``selfless serve`` writes into the data directory.

DEFAULT_ENDPOINT = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
PROFILE = "selfless"
DEFAULT_ACCOUNT_ID = "000000000000"
# Invoke blocks for as long as the function runs: up to Lambda's 900 s maximum plus a cold start.
READ_TIMEOUT_S = 960
CONNECT_TIMEOUT_S = 5
# Directories never worth shipping in a package: bytecode caches the runtime rebuilds, and VCS metadata.
SKIPPED_DIRS = frozenset({"__pycache__", ".git"})
# Zip entries get a fixed timestamp so the same tree always yields the same bytes, hence the same CodeSha256.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhd])\s*$", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class CliFailure(click.ClickException):
    """A client command failed for a reason the user can act on: shown as one ``selfless: ...`` line on
    stderr, exit status 1."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"selfless: {self.message}", file=file if file is not None else sys.stderr)


def _one_line(text: str) -> str:
    """``text`` with every run of whitespace, newlines included, collapsed to one space."""
    return " ".join(str(text).split())


def default_endpoint(environ: Mapping[str, str] | None = None) -> str:
    """The server URL when neither --endpoint nor SELFLESS_ENDPOINT is given: where ``selfless serve`` would
    listen under the same SELFLESS_HOST/SELFLESS_PORT, else http://127.0.0.1:9400."""
    env = os.environ if environ is None else environ
    host = env.get("SELFLESS_HOST") or DEFAULT_HOST
    port = env.get("SELFLESS_PORT") or str(DEFAULT_PORT)
    # A wildcard listen address is not somewhere a client can connect to; the loopback address is.
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _check_endpoint(ctx: click.Context, param: click.Parameter, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.BadParameter(f"not an http(s) URL: {value!r}", ctx=ctx, param=param)
    return value.rstrip("/")


def read_profile_keys(path: Path, profile: str = PROFILE) -> tuple[str, str] | None:
    """(key id, secret) of ``profile`` in an AWS shared-credentials file; None when the file or the profile
    does not exist. A file that exists but cannot be read or parsed is a CliFailure, not a silent fallback
    to some other identity."""
    if not path.is_file():
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open(encoding="utf-8") as f:
            parser.read_file(f)
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise CliFailure(f"cannot read {path}: {exc}") from None
    if not parser.has_section(profile):
        return None
    section = parser[profile]
    key_id, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
    return (key_id, secret) if key_id and secret else None


class Connection:
    """How the client commands reach a server: one boto3 session, one client per service made on first use.

    Credentials, first found wins: SELFLESS_ACCESS_KEY_ID/SELFLESS_SECRET_ACCESS_KEY; the ``selfless`` profile
    of ``<data-dir>/credentials``; boto3's own chain (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...). Region:
    SELFLESS_REGION, else us-east-1.
    """

    def __init__(self, endpoint: str, data_dir: Path) -> None:
        self.endpoint = endpoint
        self.credentials_file = data_dir / "credentials"
        self._session: Any = None
        self._clients: dict[str, Any] = {}

    def _make_session(self) -> Any:
        region = os.environ.get("SELFLESS_REGION") or "us-east-1"
        key_id = os.environ.get("SELFLESS_ACCESS_KEY_ID") or None
        secret = os.environ.get("SELFLESS_SECRET_ACCESS_KEY") or None
        if (key_id is None) != (secret is None):
            raise CliFailure("set both SELFLESS_ACCESS_KEY_ID and SELFLESS_SECRET_ACCESS_KEY, or neither")
        if key_id is None:
            pair = read_profile_keys(self.credentials_file)
            if pair is not None:
                key_id, secret = pair
        if key_id is not None:
            keys = {"aws_access_key_id": key_id, "aws_secret_access_key": secret}
            return boto3.session.Session(region_name=region, **keys)
        return boto3.session.Session(region_name=region)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            if self._session is None:
                self._session = self._make_session()
            config = BotoConfig(
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=READ_TIMEOUT_S,
                retries={"mode": "standard", "max_attempts": 3},
                parameter_validation=True,
            )
            self._clients[service] = self._session.client(service, endpoint_url=self.endpoint, config=config)
        return self._clients[service]

    @property
    def lambda_(self) -> Any:
        return self.client("lambda")

    def selfless(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One of selfless's own operations (``/_selfless/...``), signed with SigV4 for lambda as boto3
        signs Lambda's; raises ClientError for an error answer, as boto3 does."""
        import urllib.error
        import urllib.request

        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        session = self._session if self._session is not None else self._make_session()
        self._session = session
        credentials = session.get_credentials()
        if credentials is None:
            raise NoCredentialsError()
        data = json.dumps(body).encode() if body is not None else b""
        request = AWSRequest(method=method, url=self.endpoint.rstrip("/") + path, data=data)
        SigV4Auth(credentials.get_frozen_credentials(), "lambda", session.region_name or "us-east-1").add_auth(request)
        prepared = request.prepare()
        opened = urllib.request.Request(prepared.url, data=prepared.body or None, method=method)
        for name, value in prepared.headers.items():
            opened.add_header(name, value)
        try:
            with urllib.request.urlopen(opened, timeout=READ_TIMEOUT_S) as answer:
                return dict(json.loads(answer.read() or b"{}"))
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
            code = exc.headers.get("x-amzn-ErrorType", "Error").split(":")[0]
            error = {"Error": {"Code": code, "Message": body.get("message") or body.get("Message") or ""}}
            raise ClientError(error, method) from None
        except urllib.error.URLError:
            raise EndpointConnectionError(endpoint_url=self.endpoint) from None

    @property
    def logs(self) -> Any:
        return self.client("logs")

    def missing_credentials(self) -> str:
        return (
            "no credentials found: SELFLESS_ACCESS_KEY_ID/SELFLESS_SECRET_ACCESS_KEY are not set, "
            f"{self.credentials_file} has no [{PROFILE}] profile, and the AWS credential chain "
            "(AWS_ACCESS_KEY_ID, AWS_PROFILE, ~/.aws/credentials) has none; "
            "pass the server's --data-dir or set SELFLESS_DATA_DIR"
        )


def _client_error(exc: Any) -> CliFailure:
    error = exc.response.get("Error", {}) if isinstance(exc.response, dict) else {}
    code = error.get("Code") or "Error"
    message = error.get("Message") or ""
    return CliFailure(f"{code}: {message}" if message else str(code))


def client_command(f: Callable[..., None]) -> Callable[..., None]:
    """Give a command the connection options (--endpoint, --data-dir) and turn every failure of talking to
    the server into one ``selfless: ...`` line and exit status 1. ``f`` receives a Connection first."""

    @functools.wraps(f)
    def run(*args: Any, endpoint: str, data_dir: Path, **kwargs: Any) -> None:
        conn = Connection(endpoint, data_dir)
        try:
            f(conn, *args, **kwargs)
        except ClientError as exc:
            raise _client_error(exc) from None
        except EndpointConnectionError:  # includes ConnectTimeoutError
            raise CliFailure(f"cannot reach {endpoint}: is 'selfless serve' running?") from None
        except ReadTimeoutError:
            raise CliFailure(f"{endpoint} did not answer within {READ_TIMEOUT_S} s") from None
        except ConnectionClosedError:
            raise CliFailure(f"{endpoint} closed the connection before answering") from None
        except (NoCredentialsError, PartialCredentialsError):
            raise CliFailure(conn.missing_credentials()) from None
        except ParamValidationError as exc:
            raise CliFailure(str(exc)) from None
        except BotoCoreError as exc:
            raise CliFailure(str(exc)) from None
        except BrokenPipeError:
            # The reader went away (``selfless logs NAME | head``): stop quietly, and point stdout at
            # /dev/null so the interpreter's final flush does not raise again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(1)
        except OSError as exc:  # local files: an unreadable file in a package, say
            raise CliFailure(str(exc)) from None

    run = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="SELFLESS_DATA_DIR",
        default=DEFAULT_DATA_DIR,
        show_default=True,
        help="The server's data dir, to find its credentials file [SELFLESS_DATA_DIR].",
    )(run)
    run = click.option(
        "--endpoint",
        envvar="SELFLESS_ENDPOINT",
        default=default_endpoint,
        callback=_check_endpoint,
        help=f"The server's URL [SELFLESS_ENDPOINT; else from SELFLESS_HOST/PORT; {DEFAULT_ENDPOINT}].",
    )(run)
    return run


# -- deploy --------------------------------------------------------------------------------------------


def zip_directory(root: Path) -> bytes:
    """A zip of every regular file under ``root`` (symlinks to files are read through; symlinked
    directories, ``__pycache__`` and ``.git`` are left out), in sorted path order with fixed timestamps, so
    the same tree always gives the same bytes. Modes are normalised to 0755 for anything executable by its
    owner and 0644 otherwise: exec bits survive, the packer's umask does not."""
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS]
        base = Path(dirpath)
        for filename in filenames:
            path = base / filename
            files.append((path.relative_to(root).as_posix(), path))
    files.sort()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname, path in files:
            st = path.stat()
            if not stat.S_ISREG(st.st_mode):
                continue  # sockets, FIFOs, devices: nothing a function could use
            info = zipfile.ZipInfo(arcname, date_time=ZIP_EPOCH)
            info.create_system = 3  # Unix, so unzippers honour the mode in external_attr
            info.compress_type = zipfile.ZIP_DEFLATED
            mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            zf.writestr(info, path.read_bytes())
    return buf.getvalue()


def _parse_env(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str] | None:
    if not values:
        return None
    env: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", ctx=ctx, param=param)
        env[key] = value
    return env


def _get_function(client: Any, name: str) -> dict[str, Any] | None:
    """GetFunction's answer, or None when the function does not exist."""
    try:
        result: dict[str, Any] = client.get_function(FunctionName=name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None
        raise
    return result


def _wait_ready(client: Any, name: str, status: Any) -> None:
    """Block until the function is Active and its last update Successful; CliFailure if it never gets
    there (the server's reason included)."""
    for waiter_name, what in (("function_active_v2", "Active"), ("function_updated_v2", "updated")):
        status.update(f"waiting for {name} to be {what}")
        try:
            client.get_waiter(waiter_name).wait(FunctionName=name)
        except WaiterError as exc:
            last = exc.last_response if isinstance(exc.last_response, dict) else {}
            config = last.get("Configuration", {})
            reason = (
                config.get("StateReason")
                or config.get("LastUpdateStatusReason")
                or last.get("Error", {}).get("Message")
                or str(exc)
            )
            raise CliFailure(f"{name} did not become {what}: {reason}") from None


def _configuration_changes(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The UpdateFunctionConfiguration parameters among ``wanted`` (None: leave as is) that differ."""
    changes: dict[str, Any] = {}
    for key, value in wanted.items():
        if value is None:
            continue
        if key == "Environment":
            if current.get("Environment", {}).get("Variables", {}) != value["Variables"]:
                changes[key] = value
        elif current.get(key) != value:
            changes[key] = value
    return changes


@main.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", "-n", required=True, help="Function name.")
@click.option("--runtime", required=True, help="Runtime, e.g. python3.12.")
@click.option("--handler", required=True, help="Handler, e.g. app.handler.")
@click.option("--memory", type=int, default=None, help="Memory in MB [new functions: 128].")
@click.option("--timeout", type=int, default=None, help="Timeout in seconds [new functions: 3].")
@click.option(
    "--env",
    multiple=True,
    callback=_parse_env,
    metavar="KEY=VALUE",
    help="Environment variable (repeatable).",
)
@click.option("--role", default=None, help="Execution role ARN [new: arn:aws:iam::<account>:role/selfless].")
@client_command
def deploy(
    conn: Connection,
    directory: Path,
    name: str,
    runtime: str,
    handler: str,
    memory: int | None,
    timeout: int | None,
    env: dict[str, str] | None,
    role: str | None,
) -> None:
    """Package DIRECTORY and create or update the function NAME from it.

    Creates the function when it does not exist; otherwise updates its code, and its configuration where
    the options given differ from it (options not given are left as they are). Returns once the function
    is Active with its last update Successful, printing its ARN and CodeSha256.
    """
    client = conn.lambda_
    console = Console(stderr=True)
    with console.status(f"packaging {directory}") as status:
        package = zip_directory(directory)
        status.update(f"looking up {name}")
        existing = _get_function(client, name)
        if existing is None:
            status.update(f"creating {name} ({len(package)} bytes)")
            account = os.environ.get("SELFLESS_ACCOUNT_ID") or DEFAULT_ACCOUNT_ID
            params: dict[str, Any] = {
                "FunctionName": name,
                "Runtime": runtime,
                "Handler": handler,
                "Role": role or f"arn:aws:iam::{account}:role/selfless",
                "Code": {"ZipFile": package},
            }
            if memory is not None:
                params["MemorySize"] = memory
            if timeout is not None:
                params["Timeout"] = timeout
            if env is not None:
                params["Environment"] = {"Variables": env}
            result = client.create_function(**params)
            verb = "created"
        else:
            wanted = {
                "Runtime": runtime,
                "Handler": handler,
                "MemorySize": memory,
                "Timeout": timeout,
                "Environment": None if env is None else {"Variables": env},
                "Role": role,
            }
            changes = _configuration_changes(existing.get("Configuration", {}), wanted)
            if changes:
                # Configuration first: a mistyped option is refused before the code has changed.
                status.update(f"updating {', '.join(sorted(changes))} of {name}")
                client.update_function_configuration(FunctionName=name, **changes)
                # A function takes one update at a time: this one must settle before the code's.
                _wait_ready(client, name, status)
            status.update(f"uploading code of {name} ({len(package)} bytes)")
            result = client.update_function_code(FunctionName=name, ZipFile=package)
            verb = "updated"
        _wait_ready(client, name, status)
    click.echo(f"{verb} {result['FunctionArn']} (CodeSha256 {result['CodeSha256']})")


# -- invoke --------------------------------------------------------------------------------------------


def _parse_payload(ctx: click.Context, param: click.Parameter, value: str) -> bytes:
    """--payload: JSON text, or ``@FILE`` naming a file that holds it (``@-``: stdin); the bytes to send."""
    if value.startswith("@"):
        source = value[1:]
        try:
            data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise click.BadParameter(f"cannot read {source}: {reason}", ctx=ctx, param=param) from None
        where = f"{source} does not hold"
    else:
        data = value.encode()
        where = "not"
    try:
        json.loads(data)
    except ValueError as exc:
        raise click.BadParameter(f"{where} valid JSON: {exc}", ctx=ctx, param=param) from None
    return data


@main.command()
@click.argument("name")
@click.option(
    "--payload",
    default="{}",
    callback=_parse_payload,
    metavar="JSON|@FILE",
    help="The event: JSON text, or @FILE to read it from FILE ('@-': stdin) [{}].",
)
@click.option("--logs", "show_logs", is_flag=True, help="Print the invocation's log tail to stderr.")
@click.option("--async", "asynchronous", is_flag=True, help="Queue the event (InvocationType Event).")
@client_command
def invoke(conn: Connection, name: str, payload: bytes, show_logs: bool, asynchronous: bool) -> None:
    """Invoke the function NAME and print its response payload to stdout.

    Exit status 1 when the function returned an error (the error payload is still printed). With --async
    the event is only queued, and the request's status is printed instead.
    """
    client = conn.lambda_
    if asynchronous:
        if show_logs:
            raise click.UsageError("--logs needs a synchronous invoke: the log tail comes with the response")
        response = client.invoke(FunctionName=name, InvocationType="Event", Payload=payload)
        request_id = response.get("ResponseMetadata", {}).get("RequestId", "?")
        click.echo(f"queued: status {response.get('StatusCode')}, request id {request_id}")
        return
    response = client.invoke(FunctionName=name, Payload=payload, LogType="Tail" if show_logs else "None")
    body = response["Payload"].read()
    if show_logs and response.get("LogResult"):
        try:
            tail = base64.b64decode(response["LogResult"]).decode("utf-8", errors="replace")
        except (binascii.Error, ValueError):
            tail = "(the log tail could not be decoded)\n"
        click.echo(tail, err=True, nl=not tail.endswith("\n"))
    click.echo(body.decode("utf-8", errors="replace"))
    if response.get("FunctionError"):
        raise CliFailure(f"{name} returned a function error ({response['FunctionError']})")


# -- ls, rm --------------------------------------------------------------------------------------------


@main.command("ls")
@client_command
def list_functions(conn: Connection) -> None:
    """List the functions.

    A table of name, runtime, memory, timeout, last modified and code size; "no functions" on stderr if none
    (ListFunctions carries no state, as on AWS).
    """
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("Name", "Runtime", "Memory", "Timeout", "Last modified", "Code size"):
        table.add_column(column, no_wrap=True)
    count = 0
    for page in conn.lambda_.get_paginator("list_functions").paginate():
        for fn in page.get("Functions", []):
            count += 1
            table.add_row(
                fn.get("FunctionName", "?"),
                fn.get("Runtime") or "-",
                f"{fn['MemorySize']} MB" if "MemorySize" in fn else "-",
                f"{fn['Timeout']} s" if "Timeout" in fn else "-",
                fn.get("LastModified") or "-",
                f"{fn['CodeSize']:,} B" if "CodeSize" in fn else "-",
            )
    if count == 0:
        click.echo("no functions", err=True)
        return
    # Piped output must not be cut to a terminal's width: scripts grep it.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 10_000)
    console.print(table)


@main.command("rm")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@client_command
def remove(conn: Connection, name: str, yes: bool) -> None:
    """Delete the function NAME. Asks first when stdin is a terminal, unless --yes."""
    if not yes and sys.stdin is not None and sys.stdin.isatty():
        click.confirm(f"Delete function {name}?", abort=True)
    conn.lambda_.delete_function(FunctionName=name)
    click.echo(f"deleted {name}")


@main.command("events")
@click.argument("name")
@click.option("--redrive", is_flag=True, help="Queue the function's failed events again.")
@client_command
def events(conn: Connection, name: str, redrive: bool) -> None:
    """List the asynchronous events of the function NAME that have not succeeded yet.

    A table of request id, qualifier, state (queued, retrying, failed), attempts, when it was accepted and
    why it failed; a record or dead-letter message still on its way to a queue, topic, bus or bucket shows
    as "deliver to ARN" in the qualifier's place. "no events" on stderr if none. With --redrive, queue the
    failed ones (deliveries too) again.
    """
    path = f"/_selfless/functions/{name}/events"
    if redrive:
        count = conn.selfless("POST", path + "/redrive")["Redriven"]
        click.echo(f"re-drove {count} failed event{'s' if count != 1 else ''} of {name}")
        return
    found = conn.selfless("GET", path)["Events"]
    if not found:
        click.echo("no events", err=True)
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("Request id", "Qualifier", "State", "Attempts", "Accepted", "Failure"):
        table.add_column(column, no_wrap=True)
    for e in found:
        failure = " ".join(str(x) for x in (e.get("Failure"), e.get("LastError")) if x) or "-"
        where = f"deliver to {e['DeliverTo']}" if e.get("DeliverTo") else e["Qualifier"]
        table.add_row(e["RequestId"], where, e["State"], str(e["Attempts"]), _iso(int(e["AcceptedAt"] * 1000)), failure)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 10_000)
    console.print(table)


# -- webhook triggers -------------------------------------------------------------------------------------


@main.group("webhooks")
def webhooks() -> None:
    """Run functions on uploads to external object stores (MinIO, Ceph RGW) through their webhooks."""


@webhooks.command("create")
@click.argument("name")
@click.option("--source", type=click.Choice(["minio", "ceph"]), required=True, help="The store that calls.")
@click.option("--bucket", required=True, help="The store's bucket whose events run the function.")
@click.option("--function", "function", required=True, help="Function name or ARN (an alias or version too).")
@click.option(
    "--event",
    "events",
    multiple=True,
    default=("s3:ObjectCreated:*",),
    show_default=True,
    help="An S3 event type (repeatable).",
)
@click.option("--prefix", default=None, help="Only keys that start with this.")
@click.option("--suffix", default=None, help="Only keys that end with this.")
@click.option("--token", default=None, help="The store's token (default: a new random one, printed once).")
@client_command
def webhooks_create(
    conn: Connection,
    name: str,
    source: str,
    bucket: str,
    function: str,
    events: tuple[str, ...],
    prefix: str | None,
    suffix: str | None,
    token: str | None,
) -> None:
    """Create the webhook trigger NAME, and print how to point the store at it.

    MinIO: set the printed endpoint and token as a notify_webhook target, then add the bucket's event
    notification for that target. Ceph RGW: create a topic whose push-endpoint is the printed URL (the token
    rides in its query: Ceph cannot set headers), then the bucket's notification on that topic.
    """
    rules = [{"Name": n, "Value": v} for n, v in (("prefix", prefix), ("suffix", suffix)) if v]
    body: dict[str, Any] = {"Name": name, "Source": source, "Bucket": bucket, "FunctionName": function}
    body["Events"] = list(events)
    if rules:
        body["Filter"] = {"Key": {"FilterRules": rules}}
    if token:
        body["Token"] = token
    made = conn.selfless("POST", "/_selfless/webhook-triggers", body)
    url = conn.endpoint.rstrip("/") + made["Endpoint"]
    click.echo(f"created webhook trigger {name}: {source} bucket {bucket} -> {made['FunctionArn']}")
    if source == "minio":
        click.echo(f"endpoint:   {url}")
        click.echo(f"auth_token: {made['Token']}")
        click.echo(f"  mc admin config set ALIAS notify_webhook:{name} endpoint={url} auth_token={made['Token']}")
        click.echo(f"  mc event add ALIAS/{bucket} arn:minio:sqs::{name}:webhook --event put")
    else:
        click.echo(f"push-endpoint: {url}?token={made['Token']}")


@webhooks.command("list")
@client_command
def webhooks_list(conn: Connection) -> None:
    """List the webhook triggers ("no webhook triggers" on stderr if none)."""
    found = conn.selfless("GET", "/_selfless/webhook-triggers")["WebhookTriggers"]
    if not found:
        click.echo("no webhook triggers", err=True)
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("Name", "Source", "Bucket", "Events", "Filter", "Function"):
        table.add_column(column, no_wrap=True)
    for t in found:
        rules = (t.get("Filter") or {}).get("Key", {}).get("FilterRules", [])
        shown = " ".join(f"{r['Name']}={r['Value']}" for r in rules) or "-"
        table.add_row(t["Name"], t["Source"], t["Bucket"], ",".join(t["Events"]), shown, t["FunctionArn"])
    Console(highlight=False, width=None if sys.stdout.isatty() else 10_000).print(table)


@webhooks.command("delete")
@click.argument("name")
@client_command
def webhooks_delete(conn: Connection, name: str) -> None:
    """Delete the webhook trigger NAME (the store's later deliveries get 404)."""
    conn.selfless("DELETE", f"/_selfless/webhook-triggers/{name}")
    click.echo(f"deleted webhook trigger {name}")


# -- logs ----------------------------------------------------------------------------------------------


def _parse_duration(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """A span of time such as 30s, 10m, 2h or 1d, in seconds."""
    match = _DURATION_RE.match(value)
    if match is None:
        raise click.BadParameter(f"{value!r} is not a duration like 30s, 10m, 2h or 1d", ctx=ctx, param=param)
    return int(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]


def _filter_log_events(client: Any, group: str, start_ms: int) -> Iterator[dict[str, Any]]:
    """Every event of ``group`` from ``start_ms`` on, following nextToken to the last page."""
    params: dict[str, Any] = {"logGroupName": group, "startTime": start_ms}
    while True:
        page = client.filter_log_events(**params)
        yield from page.get("events", [])
        token = page.get("nextToken")
        if not token:
            return
        params["nextToken"] = token


def _iso(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


@main.command()
@click.argument("name")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option(
    "--since",
    default="10m",
    show_default=True,
    callback=_parse_duration,
    metavar="DURATION",
    help="How far back to start: 30s, 10m, 2h, 1d.",
)
@client_command
def logs(conn: Connection, name: str, follow: bool, since: int) -> None:
    """Print the log events of the function NAME.

    One ``<ISO timestamp> <message>`` line per event, from --since ago on. A function that exists but has
    not logged anything yet prints nothing. With --follow, polls every second for newer events until
    interrupted, then exits 0.
    """
    group = f"/aws/lambda/{name}"
    start_ms = int(time.time() * 1000) - since * 1000
    # eventId -> timestamp of what has been printed. Each poll restarts at the newest timestamp seen, so
    # events sharing that millisecond come back and must not print twice; older ids can be forgotten.
    seen: dict[str, int] = {}
    function_checked = False
    try:
        while True:
            try:
                events = list(_filter_log_events(conn.logs, group, start_ms))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise
                # No log group yet: fine for a function that has not run, an error for one that does not
                # exist (GetFunction raises ResourceNotFoundException for us then).
                if not function_checked:
                    conn.lambda_.get_function(FunctionName=name)
                    function_checked = True
                events = []
            for event in events:
                timestamp = int(event.get("timestamp", 0))
                message = str(event.get("message", ""))
                event_id = str(event.get("eventId") or (event.get("logStreamName"), timestamp, message))
                if event_id in seen:
                    continue
                seen[event_id] = timestamp
                start_ms = max(start_ms, timestamp)
                click.echo(f"{_iso(timestamp)} {message.rstrip()}")
            if not follow:
                return
            sys.stdout.flush()
            seen = {k: t for k, t in seen.items() if t >= start_ms}
            time.sleep(1)
    except KeyboardInterrupt:
        # Ctrl-C is how --follow is meant to end.
        return


if __name__ == "__main__":  # pragma: no cover
    main()
