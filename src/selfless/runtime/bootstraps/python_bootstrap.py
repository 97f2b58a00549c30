"""selfless's Python runtime: runs inside an execution environment and speaks the Runtime API 2018-06-01.

Started as ``python -I -S -u python_bootstrap.py`` with the environment AWS documents (_HANDLER,
LAMBDA_TASK_ROOT, AWS_LAMBDA_RUNTIME_API, ...). It imports the handler once (init) and then loops on
``/invocation/next``. Runs on every supported interpreter (3.9+), imports only what it needs before the
handler, and talks HTTP/1.1 keep-alive over one socket with TCP_NODELAY.

Not part of the selfless package's import graph: it never imports selfless.
"""

# The C module, not socket.py: saves ~2.5 ms of every cold start (socket.py pulls in selectors and more).
import _socket
import json
import os
import sys
import time

_API = "/2018-06-01/runtime"


class _Conn:
    """A minimal HTTP/1.1 keep-alive client for the Runtime API on loopback."""

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self.host = host
        self.port = int(port)
        self.sock = None
        self.buf = b""

    def _connect(self):
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        sock.connect((self.host, self.port))
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        self.sock = sock
        self.buf = b""

    def adopt(self, fd):
        """Use a connection the server made for this process (a forked environment); should it ever close,
        the next request connects to the address as usual."""
        self.sock = _socket.socket(fileno=fd)
        self.buf = b""

    @staticmethod
    def _message(method, path, body, headers):
        head = "%s %s HTTP/1.1\r\nHost: runtime\r\nContent-Length: %d\r\n" % (method, path, len(body))
        for name, value in headers:
            head += "%s: %s\r\n" % (name, value)
        return (head + "\r\n").encode("latin-1") + body

    def post_then_next(self, path, body, headers=()):
        """POST an invocation's result and ask for the next event in the same write (HTTP/1.1 pipelining:
        the server answers them in turn), which spares the runtime and the server a round trip per call;
        the answer to the /next. Should the server close the connection after the POST (a result it
        refused), the /next is asked again on a new one."""
        nxt = self._message("GET", _API + "/invocation/next", b"", ())
        if self.sock is None:
            self.request("POST", path, body, headers)
            return self.request("GET", _API + "/invocation/next")
        try:
            self.sock.sendall(self._message("POST", path, body, headers) + nxt)
            _status, headers_in, _payload = self._read_response()
        except (ConnectionError, OSError):
            # The server closed an idle keep-alive connection: both once more, one by one on a new one.
            self.close()
            self.request("POST", path, body, headers)
            return self.request("GET", _API + "/invocation/next")
        try:
            if headers_in.get("connection", "").lower() == "close":
                raise ConnectionError("the runtime API closed the connection after the result")
            status, headers_in, payload = self._read_response()
        except (ConnectionError, OSError):
            self.close()
            return self.request("GET", _API + "/invocation/next")
        if headers_in.get("connection", "").lower() == "close":
            self.close()
        return status, headers_in, payload

    def request(self, method, path, body=b"", headers=()):
        data = self._message(method, path, body, headers)
        reused = self.sock is not None
        if not reused:
            self._connect()
        try:
            self.sock.sendall(data)
            status, headers_in, payload = self._read_response()
        except (ConnectionError, OSError):
            if not reused:
                raise
            # The server closed an idle keep-alive connection: once more on a new one.
            self.close()
            self._connect()
            self.sock.sendall(data)
            status, headers_in, payload = self._read_response()
        if headers_in.get("connection", "").lower() == "close":
            self.close()
        return status, headers_in, payload

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.buf = b""

    def _read_response(self):
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("runtime API closed the connection")
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = self.sock.recv(max(65536, length - len(rest)))
            if not chunk:
                raise ConnectionError("runtime API closed the connection")
            rest += chunk
        self.buf = rest[length:]
        return status, headers, rest[:length]


class _ClientContext:
    __slots__ = ("client", "custom", "env")

    def __init__(self, data):
        self.client = data.get("client")
        self.custom = data.get("custom")
        self.env = data.get("env")


class _CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, data):
        self.cognito_identity_id = data.get("cognitoIdentityId")
        self.cognito_identity_pool_id = data.get("cognitoIdentityPoolId")


class LambdaContext:
    """The handler's context object, with the attributes and methods AWS's Python runtime provides."""

    def __init__(self, request_id, deadline_ms, function_arn, client_context, identity):
        env = os.environ
        self.aws_request_id = request_id
        self.invoked_function_arn = function_arn
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self._deadline_ms = deadline_ms
        self.client_context = _ClientContext(client_context) if client_context is not None else None
        self.identity = _CognitoIdentity(identity or {})

    def get_remaining_time_in_millis(self):
        return max(0, int(self._deadline_ms - time.time() * 1000))

    def log(self, msg):
        sys.stdout.write(str(msg))

    def __repr__(self):
        return (
            "LambdaContext([aws_request_id=%s,log_group_name=%s,log_stream_name=%s,function_name=%s,"
            "memory_limit_in_mb=%s,function_version=%s,invoked_function_arn=%s,client_context=%s,identity=%s])"
            % (
                self.aws_request_id,
                self.log_group_name,
                self.log_stream_name,
                self.function_name,
                self.memory_limit_in_mb,
                self.function_version,
                self.invoked_function_arn,
                self.client_context,
                self.identity,
            )
        )


class _UserError(Exception):
    def __init__(self, error_type, message, stack=None):
        Exception.__init__(self, message)
        self.error_type = error_type
        self.message = message
        self.stack = stack or []


def _error_body(exc, error_type=None):
    import traceback  # only on the error path: it pulls in linecache and tokenize

    if isinstance(exc, _UserError):
        body = {"errorMessage": exc.message, "errorType": exc.error_type, "stackTrace": exc.stack}
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        stack = [line for line in traceback.format_list(frames) if "python_bootstrap.py" not in line]
        body = {
            "errorMessage": str(exc),
            "errorType": error_type or type(exc).__name__,
            "requestId": "",
            "stackTrace": stack,
        }
    return body


def _load_handler(spec, task_root):
    try:
        modname, fname = spec.rsplit(".", 1)
    except ValueError as exc:
        raise _UserError("Runtime.MalformedHandlerName", "Bad handler '%s': %s" % (spec, exc)) from None
    modname = modname.replace("/", ".")
    import importlib

    try:
        if modname.split(".")[0] in sys.builtin_module_names:
            raise _UserError(
                "Runtime.BuiltInModuleConflict",
                "Cannot use built-in module %s as a handler module" % modname,
            )
        module = importlib.import_module(modname)
    except _UserError:
        raise
    except SyntaxError as exc:
        raise _UserError(
            "Runtime.UserCodeSyntaxError",
            "Syntax error in module '%s': %s" % (modname, exc),
            ['  File "%s" Line %s\n    %s\n' % (exc.filename, exc.lineno, (exc.text or "").strip())],
        ) from None
    except ImportError as exc:
        raise _UserError("Runtime.ImportModuleError", "Unable to import module '%s': %s" % (modname, exc)) from None
    except Exception as exc:
        body = _error_body(exc)
        raise _UserError(body["errorType"], body["errorMessage"], body["stackTrace"]) from None
    handler = getattr(module, fname, None)
    if handler is None:
        raise _UserError("Runtime.HandlerNotFound", "Handler '%s' missing on module '%s'" % (fname, modname))
    return handler


def _prepare_paths(env):
    task_root = env.get("LAMBDA_TASK_ROOT", os.getcwd())
    os.chdir(task_root)
    # The import path AWS's Python runtime gives a function: its code, PYTHONPATH extras, then its layers'
    # python/lib/pythonX.Y/site-packages and python/ (in /opt, where later layers overrode earlier ones).
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    opt = env.get("SELFLESS_OPT_DIR", "/opt")
    site = "%s/python/lib/python%d.%d/site-packages" % (opt, sys.version_info[0], sys.version_info[1])
    sys.path[:0] = [task_root] + extra + [site, opt + "/python"]
    # boto3 and friends, as AWS's runtime provides them: after everything the function brings itself.
    provided = env.get("SELFLESS_RUNTIME_PACKAGES")
    if provided and sys.version_info >= (3, 10) and provided not in sys.path:
        sys.path.append(provided)
    return task_root


# The request being served, for log records (AWS's runtime stamps each with it).
_CURRENT = {"request_id": ""}
_JSON_LOGS = [False]


def _setup_logging(env):
    """The root logger as AWS's Python runtime sets it up: one handler writing each record to stdout, in
    Lambda's text form ("[LEVEL]\t<time>Z\t<request id>\t<message>") or, with AWS_LAMBDA_LOG_FORMAT=JSON, as
    one JSON object (timestamp, level, message, logger, requestId, and the exception's errorType,
    errorMessage, stackTrace and location); AWS_LAMBDA_LOG_LEVEL (JSON only) sets the root logger's level."""
    import logging

    _JSON_LOGS[0] = env.get("AWS_LAMBDA_LOG_FORMAT", "").upper() == "JSON"
    logging.Formatter.converter = time.gmtime

    class RequestId(logging.Filter):
        def filter(self, record):
            record.aws_request_id = _CURRENT["request_id"]
            return True

    class Json(logging.Formatter):
        reserved = frozenset(vars(logging.makeLogRecord({}))) | {"aws_request_id", "message", "asctime"}

        def format(self, record):
            level = min(50, max(0, record.levelno)) // 10 * 10
            message = record.msg if isinstance(record.msg, dict) and not record.args else record.getMessage()
            doc = {
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
                "level": logging.getLevelName(level),
                "message": message,
                "logger": record.name,
                "requestId": record.aws_request_id or None,
            }
            if record.exc_info:
                import traceback

                doc["stackTrace"] = traceback.format_tb(record.exc_info[2])
                doc["errorType"] = record.exc_info[0].__name__
                doc["errorMessage"] = str(record.exc_info[1])
                doc["location"] = "%s:%s:%s" % (record.pathname, record.funcName, record.lineno)
            for key, value in vars(record).items():  # what the caller passed as ``extra``
                if key not in self.reserved and key not in doc:
                    doc[key] = value
            doc = {k: v for k, v in doc.items() if v is not None}
            return json.dumps(doc, ensure_ascii=False, default=str) + "\n"

    class Stdout(logging.Handler):
        def emit(self, record):
            try:
                sys.stdout.write(self.format(record))
            except Exception:
                self.handleError(record)

    handler = Stdout()
    handler.addFilter(RequestId())
    if _JSON_LOGS[0]:
        handler.setFormatter(Json())
    else:
        handler.setFormatter(
            logging.Formatter(
                "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n", "%Y-%m-%dT%H:%M:%S"
            )
        )
    root = logging.getLogger()
    root.addHandler(handler)
    level = {"TRACE": "DEBUG", "WARN": "WARNING", "FATAL": "CRITICAL"}.get(
        env.get("AWS_LAMBDA_LOG_LEVEL", "").upper(), env.get("AWS_LAMBDA_LOG_LEVEL", "").upper()
    )
    if _JSON_LOGS[0] and level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        root.setLevel(level)


def _log_error(body, request_id=""):
    """An unhandled error's log line: "[ERROR] Type: message", or in JSON format a JSON record."""
    if _JSON_LOGS[0]:
        doc = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "level": "ERROR",
            "errorMessage": body["errorMessage"],
            "errorType": body["errorType"],
            "requestId": request_id,
            "stackTrace": body.get("stackTrace", []),
        }
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        sys.stdout.write("[ERROR] %s: %s\n" % (body["errorType"], body["errorMessage"]))


def _init_failed(conn, body, error_type):
    """The init (or a forked environment's restore) failed: say so in the log and to the Runtime API."""
    _log_error(body)
    conn.request(
        "POST",
        _API + "/init/error",
        json.dumps(body).encode(),
        (("Lambda-Runtime-Function-Error-Type", error_type),),
    )


def main():
    env = os.environ
    _setup_logging(env)
    task_root = _prepare_paths(env)
    conn = _Conn(env["AWS_LAMBDA_RUNTIME_API"])
    started = time.monotonic()
    try:
        handler = _load_handler(env["_HANDLER"], task_root)
    except _UserError as exc:
        _init_failed(conn, _error_body(exc), exc.error_type)
        sys.exit(1)
    # The function's own init time (its imports), so the platform can report Init Duration honestly.
    first = (("Selfless-Init-Duration-Ms", "%.3f" % ((time.monotonic() - started) * 1000)),)
    _serve(conn, handler, first)


def _serve(conn, handler, first):
    env = os.environ
    _status, headers, event_bytes = conn.request("GET", _API + "/invocation/next", b"", first)
    while True:
        request_id = headers["lambda-runtime-aws-request-id"]
        _CURRENT["request_id"] = request_id
        trace = headers.get("lambda-runtime-trace-id")
        if trace:
            env["_X_AMZN_TRACE_ID"] = trace
        else:
            env.pop("_X_AMZN_TRACE_ID", None)
        cc = headers.get("lambda-runtime-client-context")
        ci = headers.get("lambda-runtime-cognito-identity")
        context = LambdaContext(
            request_id,
            int(headers.get("lambda-runtime-deadline-ms", "0")),
            headers.get("lambda-runtime-invoked-function-arn"),
            json.loads(cc) if cc else None,
            json.loads(ci) if ci else None,
        )
        try:
            event = json.loads(event_bytes) if event_bytes else {}
            result = handler(event, context)
            try:
                payload = json.dumps(result).encode()
            except (TypeError, ValueError) as exc:
                raise _UserError("Runtime.MarshalError", "Unable to marshal response: %s" % exc) from None
        except Exception as exc:
            body = _error_body(exc)
            body["requestId"] = request_id
            _log_error(body, request_id)
            _status, headers, event_bytes = conn.post_then_next(
                "%s/invocation/%s/error" % (_API, request_id),
                json.dumps(body).encode(),
                (("Lambda-Runtime-Function-Error-Type", "Unhandled"), ("Content-Type", "application/json")),
            )
            continue
        _status, headers, event_bytes = conn.post_then_next("%s/invocation/%s/response" % (_API, request_id), payload)


# -- fork-after-init ----------------------------------------------------------------------------------------
#
# A template runs the function's init once and then forks environments from that state on the server's
# request, each entering a sandbox of its own first (``enter_forked``: a new mount namespace with a private
# /tmp, its own uid, the full seccomp filter). Hooks registered through snapshot_restore_py (AWS's SnapStart
# hook library) run as on SnapStart: before-snapshot ones once in the template, after-restore ones in every
# forked environment, after Python's random generators were reseeded.
#
#   server -> template   {"op": "fork", "id": N, "spec": {...}} with the environment's stdout pipe, the
#                        read end of its "go" pipe and its end of a connected socket for the Runtime API
#   template -> server   {"id": N, "pid": P}; later {"exit": P, "code": C}
#   template -> server   {"ready": pid, "init_ms": T} or {"init_error": type, "message": text} at first
#
# The server then talks to the child through the "go" pipe directly: "m" once the child is in its own
# cgroup (it may enter its sandbox), then the environment's variables as JSON and end of file (it becomes
# an environment; a child forked ahead waits for this until a call needs one). End of file alone: it exits.


def _hooks(which):
    module = sys.modules.get("snapshot_restore_py")
    if module is None:
        return []
    return list(getattr(module, which)())


def _reseed():
    """A forked environment must not replay its template's random numbers."""
    rnd = sys.modules.get("random")
    if rnd is not None:
        rnd.seed()
    np_random = sys.modules.get("numpy.random")
    if np_random is not None:
        try:
            np_random.seed()
        except Exception:
            pass


def _prime():
    """In a forked child, before a call needs it: run once the bootstrap code a first call runs (decode
    and set variables, one HTTP exchange, a context object), so that the pages this writes (reference
    counts, the interpreter's inline caches) are copied from the template now instead of on the call's
    path. AWS recommends the same ("priming") for SnapStart. Changes nothing: the variables are set to what
    they are, the exchange is with a socket pair."""
    env = os.environ
    for name, value in json.loads(json.dumps(dict(env))).items():
        env[name] = value
    ours, theirs = _socket.socketpair()
    try:
        theirs.sendall(
            b"HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: prime\r\nLambda-Runtime-Deadline-Ms: 0\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        )
        conn = _Conn("localhost:0")
        conn.sock = ours
        _status, headers, body = conn.request("GET", _API + "/invocation/next")
        LambdaContext(headers["lambda-runtime-aws-request-id"], 0, "", None, None)
        json.dumps(json.loads(body)).encode()
    finally:
        ours.close()
        theirs.close()


def _immortalize(gc):
    """Make every object the init left behind immortal (Python 3.12+, PEP 683), so that a forked child's
    reference counting stops writing to the pages it shares with its template: a write to a shared page
    is a copy-on-write fault (~2.5 us, and 4 KiB more of the child's own memory), and an increment on an
    object the child merely reads is such a write. Meta's Cinder has ``immortalize_heap`` for its pre-fork
    servers for the same reason; CPython offers no public call, so the low 32 bits of each reference count
    are set to the immortal value directly (64-bit builds with the GIL, where that is the marker). The
    objects then live as long as the process; what a child drops of them stays in pages it shares with the
    template. Every object tracked by the collector is found in ``gc.get_objects()`` (which also keeps
    them alive meanwhile); the untracked ones (strings, numbers, tuples of those) through them."""
    if sys.version_info < (3, 12) or sys.maxsize <= 2**32 or "t" in getattr(sys, "abiflags", "t"):
        return  # before PEP 683, 32-bit, or free-threaded (another object header)
    try:
        import ctypes
    except ImportError:  # an interpreter built without libffi: forks still work, with more copying
        return

    cell = ctypes.c_uint32

    def fix(obj):
        """True when ``obj`` was mortal (and is not any more)."""
        count = cell.from_address(id(obj))
        if count.value >= 0x80000000:  # immortal already (or done): its referents were seen to
            return False
        count.value = 0xFFFFFFFF
        return True

    gc.unfreeze()  # what the zygote froze is in the heap the children share too
    objects = gc.get_objects()
    for obj in objects:
        fix(obj)
    is_tracked = gc.is_tracked
    get_referents = gc.get_referents
    for obj in objects:
        stack = [ref for ref in get_referents(obj) if not is_tracked(ref)]
        while stack:
            ref = stack.pop()
            if fix(ref):
                stack.extend(r for r in get_referents(ref) if not is_tracked(r))


def template_main(control, filter_prog):
    """A fork-after-init template's life (only ever called in a zygote's child, where sandbox_enter is
    importable): init, then fork environments on request."""
    import gc
    import select
    import socket

    import sandbox_enter

    def send(doc):
        control.send(json.dumps(doc).encode())

    env = os.environ
    _setup_logging(env)
    task_root = _prepare_paths(env)
    started = time.monotonic()
    try:
        handler = _load_handler(env["_HANDLER"], task_root)
        for func, args, kwargs in _hooks("get_before_snapshot"):
            func(*args, **kwargs)
    except Exception as exc:
        body = _error_body(exc)
        _log_error(body)
        send({"init_error": body["errorType"], "message": body["errorMessage"]})
        sys.exit(1)
    init_ms = (time.monotonic() - started) * 1000
    gc.collect()
    _immortalize(gc)
    if hasattr(gc, "freeze"):
        gc.freeze()
    wake_r, wake_w = sandbox_enter.watch_children()
    send({"ready": os.getpid(), "init_ms": init_ms})
    while True:
        readable, _, _ = select.select([control, wake_r], [], [])
        if wake_r in readable:
            for pid, code in sandbox_enter.reap(wake_r):
                send({"exit": pid, "code": code})
        if control not in readable:
            continue
        try:
            msg, fds, _flags, _addr = socket.recv_fds(control, 1 << 20, 3)
        except OSError:
            return
        if not msg:
            return  # the server went away; children are in their own sessions and cgroups
        doc = json.loads(msg)
        if doc.get("op") != "fork" or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            send({"id": doc.get("id"), "error": "bad request"})
            continue
        out_fd, go_r, api_fd = fds
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            send({"id": doc["id"], "error": str(exc)})
            continue
        if pid == 0:
            control.close()
            os.close(wake_r)
            os.close(wake_w)
            _forked_child(doc["spec"], out_fd, go_r, api_fd, filter_prog, sandbox_enter.enter_forked, handler)
        for fd in fds:
            os.close(fd)
        send({"id": doc["id"], "pid": pid})


def _forked_child(spec, out_fd, go_fd, api_fd, filter_prog, enter_forked, handler):
    """In a forked environment: never returns."""
    import signal

    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.close(out_fd)
        os.setsid()
        # Nothing before the server has moved this process into its own cgroup: until then what it touches
        # is charged to the template's.
        if os.read(go_fd, 1) != b"m":
            os._exit(0)
        enter_forked(spec, filter_prog)
        # Reseeded now, not when a call needs this child: it is a process of its own already.
        _reseed()
        if spec.get("prime", True):
            _prime()
        # Until there is an environment for it (a child forked ahead waits here until a call needs one): its
        # variables come through the pipe.
        chunks = []
        while True:
            chunk = os.read(go_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(go_fd)
        if not chunks:
            os._exit(0)
        started = time.monotonic()
        # Only what differs from the template's variables (credentials, log stream, Runtime API...): each
        # change is a putenv, and its first touch of a page shared with the template a copy.
        wanted = json.loads(b"".join(chunks))
        env = os.environ
        for name in [name for name in env if name not in wanted]:
            del env[name]
        for name, value in wanted.items():
            if env.get(name) != value:
                env[name] = value
        conn = _Conn(os.environ["AWS_LAMBDA_RUNTIME_API"])
        conn.adopt(api_fd)
        try:
            for func, args, kwargs in _hooks("get_after_restore"):
                func(*args, **kwargs)
        except Exception as exc:
            _init_failed(conn, _error_body(exc), "Runtime.AfterRestoreError")
            os._exit(1)
        restore = (("Selfless-Restore-Duration-Ms", "%.3f" % ((time.monotonic() - started) * 1000)),)
        _serve(conn, handler, restore)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:
        try:
            os.write(2, ("selfless: forked environment setup failed: %s: %s\n" % (type(exc).__name__, exc)).encode())
        except OSError:
            pass
        code = 127
    finally:
        os._exit(code)


if __name__ == "__main__":
    main()
