"""How apply talks to an S1SP. `Gateway` is the small interface the executor sees; `HttpGateway` speaks the
contract's anchor-slot API with httpx. Another transport (say a batch file exchange) implements the same three
methods and the executor does not change."""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Protocol

import httpx

from remediation.authority import redact


@dataclass(frozen=True)
class SlotState:
    version: int
    ds: str | None  # base64 DER as the S1SP holds it, None for an empty slot
    ka: str | None
    raw: dict  # the S1SP's response body, for the journal


@dataclass(frozen=True)
class WriteResult:
    version: int
    raw: dict


class GatewayError(Exception):
    """Base for S1SP errors; `transient` ones may be retried."""

    transient = False

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


class TransientError(GatewayError):
    transient = True


class ConnectionFailed(TransientError):
    """No connection to the S1SP at all (refused, unreachable, connect timeout): nothing was sent, so nothing written.
    Retried like any transient error; enough of them in a row open the S1SP's circuit breaker (executor.py)."""


class VersionMoved(GatewayError):
    """412: the device changed since it was read."""


class KeyConflict(GatewayError):
    """409: the idempotency key was used with another body. Never retried: it means a bug or a tampered plan."""


class UnknownDevice(GatewayError):
    """404."""


class ProtocolError(GatewayError):
    """A 200 reply that is not an answer about the device asked for, in the contract's shape: another device's id, a
    version that is not an integer, slots missing. Never retried and never believed: the device fails with the reason."""


MAX_VERSION = 2**63 - 1  # a reply's version must fit the checkpoint index's SQLite INTEGER


class Gateway(Protocol):
    def read(self, device_id: str) -> SlotState: ...

    def write(self, device_id: str, version: int, ds: str | None, ka: str | None, operation_id: str) -> WriteResult: ...

    def close(self) -> None: ...


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class HttpGateway:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 5.0,
        concurrency: int = 4,
        client_cert: tuple[str, str] | None = None,
        ca_bundle: str | None = None,
    ):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._secrets = (token,) if token else ()  # scrubbed from any reply text before it reaches an error message
        # One SSL context carries both the trust anchors and our client certificate (mutual TLS): httpx's separate
        # `cert=` argument is deprecated and was not presented to the server in our tests.
        context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()
        if client_cert:
            context.load_cert_chain(*client_cert)
        self.client = httpx.Client(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            verify=context,
        )

    def close(self) -> None:
        self.client.close()

    def _call(self, method: str, device_id: str, **kw) -> httpx.Response:
        try:
            return self.client.request(method, f"/v1/devices/{device_id}/anchor-slots", **kw)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # no connection: the request never left
            raise ConnectionFailed(f"{method} {device_id}: {type(exc).__name__}: {exc}") from exc
        except httpx.TransportError as exc:  # timeouts, resets, a connection dropped after the write committed
            raise TransientError(f"{method} {device_id}: {type(exc).__name__}: {exc}") from exc

    def _echoes_secret(self, text: str, body: dict) -> bool:
        """Whether the reply carries a credential: as sent, \\u-escaped in JSON (read back decoded) or base64."""
        if not self._secrets:
            return False
        decoded = json.dumps(body, ensure_ascii=False)
        return redact(text, self._secrets) != text or redact(decoded, self._secrets) != decoded

    def _check(self, response: httpx.Response, device_id: str) -> dict:
        status = response.status_code
        if status == 200:
            try:
                body = response.json()
            except ValueError:
                raise ProtocolError(
                    f"{device_id}: protocol error: reply is not JSON ({redact(response.text, self._secrets)[:60]!r})",
                    status,
                ) from None
            if not isinstance(body, dict):
                raise ProtocolError(f"{device_id}: protocol error: reply is not a JSON object", status)
            if self._echoes_secret(response.text, body):
                # A reply that carries our credential anywhere (device id, version, a certificate field) is not an
                # answer about the device; none of it may reach a message, the journal or the checkpoints.
                raise ProtocolError(
                    f"{device_id}: protocol error: the reply echoes the bearer token; none of it is kept", status
                )
            return body
        text = redact(response.text, self._secrets)[:200]
        if status in (429, 500, 502, 503, 504):
            raise TransientError(f"{device_id}: HTTP {status} {text}", status, _retry_after(response))
        if status == 412:
            raise VersionMoved(f"{device_id}: HTTP 412 {text}", status)
        if status == 409:
            raise KeyConflict(f"{device_id}: HTTP 409 {text}", status)
        if status == 404:
            raise UnknownDevice(f"{device_id}: HTTP 404 {text}", status)
        raise GatewayError(f"{device_id}: HTTP {status} {text}", status)

    def read(self, device_id: str) -> SlotState:
        body = self._check(self._call("GET", device_id), device_id)
        version = _reply_version(body, device_id, require_device=True)
        slots = body.get("slots")
        certs = []
        for name in ("NO_DS", "NO_KA"):
            slot = slots.get(name) if isinstance(slots, dict) else None
            cert = slot.get("cert", ...) if isinstance(slot, dict) else ...
            if cert is ... or not (cert is None or isinstance(cert, str)):
                raise ProtocolError(
                    f"{device_id}: protocol error: reply has no {name} slot with a cert (string or null)", 200
                )
            certs.append(cert)
        return SlotState(version, certs[0], certs[1], body)

    def write(self, device_id: str, version: int, ds: str | None, ka: str | None, operation_id: str) -> WriteResult:
        body = {
            "slots": {"NO_DS": {"cert": ds}, "NO_KA": {"cert": ka}},
            "reason": "MP107-R2",
            "operation_id": operation_id,
        }
        response = self._call(
            "PUT",
            device_id,
            content=json.dumps(body, sort_keys=True),
            headers={"If-Match": f'"{version}"', "Idempotency-Key": operation_id, "Content-Type": "application/json"},
        )
        data = self._check(response, device_id)
        return WriteResult(_reply_version(data, device_id, require_device=False), data)


def _reply_version(body: dict, device_id: str, *, require_device: bool) -> int:
    """The reply's version, after checking it answers for this device (a PUT's reply may leave the id out)."""
    named = body.get("device_id")
    if (require_device or named is not None) and named != device_id:
        raise ProtocolError(
            f"{device_id}: protocol error: reply names device {str(named)[:40]!r}, not the one asked for", 200
        )
    version = body.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ProtocolError(f"{device_id}: protocol error: version {str(version)[:20]!r} is not an integer", 200)
    if not 0 <= version <= MAX_VERSION:  # the checkpoint index keeps it in a 64-bit SQLite INTEGER
        raise ProtocolError(
            f"{device_id}: protocol error: version {str(version)[:20]!r} is out of range (0 to 2**63-1)", 200
        )
    return version
