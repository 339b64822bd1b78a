"""TLS server credentials from PEM files, picked up again when the files change.

gRPC asks `_fetch` for a new configuration at each handshake; we stat the files at most
once a second and switch only to a set that loads (a cert whose key matches), so a
rotation that is half-written keeps the last good certificate in use.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from backend.errors import ConfigError

log = logging.getLogger("backend.security")

_RECHECK_SECONDS = 1.0


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None  # set: mTLS, the app ID comes from the client certificate
    # When set, client SPIFFE IDs of another trust domain / namespace are refused.
    trust_domain: str | None = None
    namespace: str | None = None


def _check(files: TlsFiles) -> tuple[bytes, bytes, bytes | None]:
    """Read the files and prove they form a usable server identity."""
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(files.cert, files.key)
        if files.client_ca is not None:
            context.load_verify_locations(cafile=files.client_ca)
        return (
            files.cert.read_bytes(),
            files.key.read_bytes(),
            files.client_ca.read_bytes() if files.client_ca else None,
        )
    except FileNotFoundError as err:
        raise ConfigError(f"TLS file not found: {err.filename}") from None
    except (ssl.SSLError, OSError) as err:
        raise ConfigError(
            f"TLS files {files.cert} / {files.key}"
            + (f" / {files.client_ca}" if files.client_ca else "")
            + f" do not load ({err.__class__.__name__}: {getattr(err, 'reason', None) or err})"
        ) from None


class ReloadingCredentials:
    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._stamps = self._stat()
        self._checked = time.monotonic()
        self._config = self._configuration(*_check(files))
        self.reloads = 0

    def _paths(self) -> list[Path]:
        return [p for p in (self.files.cert, self.files.key, self.files.client_ca) if p is not None]

    def _stat(self) -> tuple[tuple[float, int], ...]:
        out = []
        for path in self._paths():
            try:
                st = path.stat()
                out.append((st.st_mtime, st.st_size))
            except OSError:
                out.append((0.0, -1))
        return tuple(out)

    def _configuration(
        self, cert: bytes, key: bytes, ca: bytes | None
    ) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._config,
            self._fetch,  # type: ignore[arg-type]  # None (keep the current one) is allowed by gRPC
            require_client_authentication=self.files.client_ca is not None,
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before a handshake: a new configuration, or None to keep the current one."""
        now = time.monotonic()
        with self._lock:
            if now - self._checked < _RECHECK_SECONDS:
                return None
            self._checked = now
            stamps = self._stat()
            if stamps == self._stamps:
                return None
            try:
                config = self._configuration(*_check(self.files))
            except ConfigError as err:
                log.warning("TLS files changed but do not load yet; keeping the current ones: %s", err)
                return None
            self._stamps = stamps
            self._config = config
            self.reloads += 1
            log.info("TLS certificate reloaded from %s", self.files.cert)
            return config
