"""The simulator's HTTP face: the contract's anchor-slot API on 127.0.0.1, with ETag/If-Match, Idempotency-Key,
optional bearer token and mutual TLS, and the fault injector in front."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from remediation.simulator.faults import FaultInjector, FaultSpec
from remediation.simulator.store import SlotStore

PATH = re.compile(r"^/v1/devices/([^/]+)/anchor-slots$")
MAX_BODY = 64 * 1024  # two certificates and a reason fit many times over


def slots_body(device_id: str, version: int, ds: str | None, ka: str | None) -> dict:
    return {"device_id": device_id, "version": version, "slots": {"NO_DS": {"cert": ds}, "NO_KA": {"cert": ka}}}


HANDSHAKE_TIMEOUT = 5.0  # seconds a client may take over the TLS handshake
IDLE_TIMEOUT = 30.0  # seconds a kept-alive connection may sit idle before its thread gives up on it


class SimulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    tls: ssl.SSLContext | None = None

    def __init__(self, address, store: SlotStore, faults: FaultSpec, token: str | None = None):
        super().__init__(address, Handler)
        self.store, self.faults, self.token = store, FaultInjector(faults), token

    def process_request_thread(self, request, client_address) -> None:
        """The TLS handshake happens here, on the connection's own thread and under a timeout: done on the accept
        thread, one client that connects and sends nothing would stall every other client."""
        if self.tls is not None:
            try:
                request.settimeout(HANDSHAKE_TIMEOUT)
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)

    def handle_error(self, request, client_address) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, ssl.SSLError)):
            return  # a client that went away (killed, timed out) is not the simulator's error
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # A reply goes out as two writes (headers, then body) on a kept-alive connection: with Nagle on, the body waits for
    # the client's delayed ACK, about 40 ms a request whatever the configured latency.
    disable_nagle_algorithm = True
    server: SimulatorServer
    timeout = IDLE_TIMEOUT

    def log_message(self, *args) -> None:  # quiet: the write log in SQLite is the record
        pass

    def _send(self, status: int, body: dict | None = None, headers: dict | None = None) -> None:
        data = json.dumps(body if body is not None else {"status": status}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _authenticated(self) -> bool:
        """The bearer token, checked before anything of the request body is read; False when answered 401."""
        if self.server.token is not None and not hmac.compare_digest(
            self.headers.get("Authorization", ""), f"Bearer {self.server.token}"
        ):
            self.close_connection = True  # the unread body must not be parsed as the next request
            self._send(401, {"error": "missing or wrong bearer token"})
            return False
        return True

    def _guard(self) -> bool:
        """Auth, latency and injected faults; False when the request was already answered."""
        if not self._authenticated():
            return False
        delay = self.server.faults.latency()
        if delay:
            time.sleep(delay)
        fault = self.server.faults.before()
        if fault is not None:
            self.server.store.count(f"fault_{fault[0]}")
            self._send(fault[0], {"error": "injected fault"}, fault[1])
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/_sim/health":
            self._send(200, {"ok": True})
            return
        m = PATH.match(self.path)
        if not m:
            self._send(404, {"error": "no such path"})
            return
        if not self._guard():
            return
        self.server.store.count("get")
        slots = self.server.store.get(m.group(1))
        if slots is None:
            self._send(404, {"error": "unknown device"})
            return
        body = self.server.faults.lie(slots_body(slots.device_id, slots.version, slots.ds, slots.ka))
        self._send(200, body, {"ETag": f'"{slots.version}"'})

    def do_PUT(self) -> None:  # noqa: N802
        m = PATH.match(self.path)
        if not self._authenticated():
            return
        try:
            length = int(self.headers.get("Content-Length", 0))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._send(400, {"error": f"Content-Length must be 0..{MAX_BODY}"})
            return
        raw = self.rfile.read(length) if length else b""
        if not m:
            self._send(404, {"error": "no such path"})
            return
        if not self._guard():
            return
        device_id = m.group(1)
        key = self.headers.get("Idempotency-Key")
        if_match = (self.headers.get("If-Match") or "").strip('"')
        try:
            body = json.loads(raw)
            ds, ka = body["slots"]["NO_DS"]["cert"], body["slots"]["NO_KA"]["cert"]
            version = int(if_match)
        except (ValueError, KeyError, TypeError):
            self._send(400, {"error": "needs If-Match, Idempotency-Key and a body with slots.NO_DS/NO_KA.cert"})
            return
        if not key:
            self._send(400, {"error": "Idempotency-Key header is required"})
            return
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        self.server.store.count("put")
        status, response, replayed = self.server.store.conditional_write(
            device_id, version, ds, ka, key, digest, lambda v: json.dumps(slots_body(device_id, v, ds, ka))
        )
        if status == 200:
            self.server.store.count("put_replayed" if replayed else "put_committed")
            if self.server.faults.drop_after_commit():
                self.server.store.count("dropped_after_commit")
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            payload = self.server.faults.lie_after_write(json.loads(response))
            self._send(200, payload, {"ETag": f'"{payload["version"]}"'})
        else:
            self._send(status, {"error": response})


def serve(
    store: SlotStore,
    port: int,
    faults: FaultSpec,
    *,
    token: str | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    client_ca: Path | None = None,
    ready=None,
) -> SimulatorServer:
    if client_ca and not tls_cert:
        raise ValueError("client_ca without tls_cert: mutual TLS cannot be required over plain HTTP")
    server = SimulatorServer(("127.0.0.1", port), store, faults, token)
    if tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls_cert, tls_key)
        if client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(client_ca)
        server.tls = context  # each accepted connection is wrapped on its own thread (process_request_thread)
    return server


def run_in_thread(server: SimulatorServer) -> threading.Thread:
    # shutdown() returns once serve_forever next polls for it: every 0.5 s by default, which each stop then waited for.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    return thread
