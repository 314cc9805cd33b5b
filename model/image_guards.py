"""Guarded image fetching and decoding, shared by the worker and the dataset importers.

Image references come from strangers (events, or rows of a dataset someone exported), so:
- URLs: http(s) only; the name is resolved here and loopback, private, link-local
  (cloud metadata), multicast and reserved addresses are refused unless the allow-list
  names them; the connection goes to the address that was checked (no second lookup an
  attacker could race), and every redirect is checked again.
- Time: one wall-clock budget covers connect, headers and body, however slowly
  the server trickles bytes. A watchdog shuts the socket down when it is spent
  (a per-read socket timeout alone never fires on a byte every half second), and
  each read is checked against it. A batch passes one deadline to all its fetches.
- Sizes: a byte limit and a bytes-per-second cap while streaming, and a pixel
  limit read from the header before any decoding, so decompression bombs are
  refused cheaply.
The limits are an `ImagePolicy` (model/image_policy.py, the one owner of their
defaults). The code lives in ``model`` because the worker already depends on ``model`` and ``model`` must not depend
on the worker (pyproject.toml's import contracts); the worker raises its own event
errors through `GuardErrors` (worker/images.py).
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Sequence
from typing import NamedTuple
from urllib.parse import urljoin, urlsplit

from PIL import Image

from model.image_policy import ImagePolicy

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
# Raster formats only: Pillow's EPS plugin, for one, would hand the bytes to Ghostscript.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
CHUNK_BYTES = 64 * 1024


class ImageGuardError(Exception):
    """The image could not be fetched or decoded."""


class ImageRefused(ImageGuardError):
    """The image reference breaks a guard (scheme, address, size); nothing more was fetched."""


class ImageFetchError(ImageGuardError):
    """The image server could not be reached or answered badly."""


class ImageDecodeError(ImageGuardError):
    """The bytes are not a complete, decodable image."""


class GuardErrors(NamedTuple):
    """The exception types the guards raise: the worker passes its own dead-letter errors."""

    refused: type[Exception]
    fetch: type[Exception]
    decode: type[Exception]


GUARD_ERRORS = GuardErrors(ImageRefused, ImageFetchError, ImageDecodeError)


class GuardedFetcher:
    """Fetches image URLs under an `ImagePolicy`; `errors` says which exceptions it raises."""

    errors: GuardErrors = GUARD_ERRORS

    def __init__(self, policy: ImagePolicy) -> None:
        self.policy = policy
        self._allowed_networks, self._allowed_hosts = _parse_allow_list(policy.allow)

    def decode(self, data: bytes) -> Image.Image:
        """`decode_image` under this fetcher's pixel limit and errors."""
        return decode_image(data, self.policy.max_pixels, self.errors)

    def fetch_url(self, url: str, *, deadline: float | None = None) -> bytes:
        """Download ``url`` under the guards, following at most ``max_redirects`` checked redirects,
        all within the policy's budget (or by ``deadline``, if that comes first)."""
        own = time.monotonic() + self.policy.read_timeout_s
        deadline = own if deadline is None else min(deadline, own)
        for _ in range(self.policy.max_redirects + 1):
            host, port, scheme, target = _split_url(url, self.errors.refused)
            if time.monotonic() >= deadline:
                raise self.errors.fetch(f"no time left to fetch from {host}: the {self.policy.read_timeout_s} s budget is spent")
            address = self.checked_address(host, port)
            status, location, body = self._get(scheme, host, port, address, target, deadline)
            if status in REDIRECT_CODES:
                if not location:
                    raise self.errors.fetch(f"redirect {status} from {host} has no Location")
                url = urljoin(url, location)
                continue
            if status != 200:
                raise self.errors.fetch(f"{host} answered HTTP {status}")
            return body
        raise self.errors.refused(f"more than {self.policy.max_redirects} redirects")

    def checked_address(self, host: str, port: int) -> IPAddress:
        """Resolve ``host`` once and return an address the policy permits, or raise `errors.refused`."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise self.errors.fetch(f"cannot resolve {host!r}: {exc}") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
        refused = [a for a in addresses if not self.address_allowed(host, a)]
        if refused:
            # One bad answer taints the name: a resolver that mixes in a private address is hostile.
            raise self.errors.refused(f"{host!r} resolves to a non-public address ({refused[0]}) that is not allow-listed")
        return addresses[0]

    def address_allowed(self, host: str, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if host.lower() in self._allowed_hosts or any(address in net for net in self._allowed_networks):
            return True
        return address.is_global and not address.is_multicast

    def _get(self, scheme: str, host: str, port: int, address: IPAddress, target: str, deadline: float):
        conn_class = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
        timeout = max(0.01, min(self.policy.connect_timeout_s, deadline - time.monotonic()))
        conn = conn_class(host, port, address=str(address), timeout=timeout)
        cut = threading.Event()
        watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), _cut, args=(conn, cut))
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.request("GET", target, headers={"User-Agent": "uapt-worker", "Accept": "image/*"})
            self._check_deadline(host, deadline)
            sock = conn.sock  # kept: the response may detach it from conn once the body is read
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            response = conn.getresponse()  # a header trickle ends when the watchdog cuts the socket
            if response.status in REDIRECT_CODES:
                answer = response.status, response.getheader("Location"), b""
            else:
                length = response.getheader("Content-Length")
                if length and length.isdigit() and int(length) > self.policy.max_bytes:
                    raise self.errors.refused(f"image at {host} is {length} bytes, over the {self.policy.max_bytes}-byte limit")
                answer = response.status, None, self._read_body(response, sock, host, deadline)
        except (OSError, http.client.HTTPException) as exc:
            if cut.is_set() or time.monotonic() >= deadline:  # cut by the watchdog, or the last read timed out
                raise self._late(host) from None
            raise self.errors.fetch(f"fetching from {host} failed: {type(exc).__name__}: {exc}") from None
        finally:
            watchdog.cancel()
            conn.close()
        if cut.is_set():  # a cut socket reads as a clean end: what came before it is not the whole answer
            raise self._late(host)
        return answer

    def _read_body(self, response: http.client.HTTPResponse, sock: socket.socket, host: str, deadline: float) -> bytes:
        """Read the body one receive at a time, checking the deadline, the byte limit and the rate cap after each."""
        body = bytearray()
        started = time.monotonic()
        while chunk := response.read1(CHUNK_BYTES):
            body += chunk
            if len(body) > self.policy.max_bytes:
                raise self.errors.refused(f"image at {host} is over the {self.policy.max_bytes}-byte limit")
            self._check_deadline(host, deadline)
            ahead = started + len(body) / self.policy.max_bytes_per_s - time.monotonic()
            if ahead > 0:  # faster than the cap: pause, and TCP flow control slows the server down
                time.sleep(max(0.0, min(ahead, deadline - time.monotonic())))
                self._check_deadline(host, deadline)
            sock.settimeout(max(0.01, deadline - time.monotonic()))
        return bytes(body)

    def _check_deadline(self, host: str, deadline: float) -> None:
        if time.monotonic() >= deadline:
            raise self._late(host)

    def _late(self, host: str) -> Exception:
        return self.errors.fetch(f"image at {host} did not arrive within the {self.policy.read_timeout_s} s budget")


def _cut(conn: http.client.HTTPConnection, cut: threading.Event) -> None:
    """The watchdog's job: shut the connection's socket down, which ends any read blocked or trickling on it."""
    cut.set()
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed by the fetching thread
            pass


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to a fixed, already-checked address; the Host header still names the URL's host."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a fixed address, with SNI and certificate checks for the URL's host name."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def _split_url(url: str, refused: type[Exception]) -> tuple[str, int, str, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise refused(f"image.url scheme {scheme or 'none'!r} is not allowed (http or https only)")
    if not parts.hostname:
        raise refused("image.url has no host")
    if parts.username or parts.password:
        raise refused("image.url must not carry credentials")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise refused("image.url has an invalid port") from None
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return parts.hostname, port, scheme, target


def _parse_allow_list(entries: Sequence[str]) -> tuple[list[ipaddress.IPv4Network | ipaddress.IPv6Network], set[str]]:
    networks, hosts = [], set()
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            hosts.add(entry.lower())
    return networks, hosts


def decode_image(data: bytes, max_pixels: int, errors: GuardErrors = GUARD_ERRORS) -> Image.Image:
    """Decode bytes to an RGB image, refusing oversized or truncated ones before they cost memory."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)  # reads the header only
            width, height = probe.size
            if width * height > max_pixels:
                raise errors.refused(f"image is {width}x{height} pixels, over the {max_pixels}-pixel limit")
            probe.verify()
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            image.load()
            return image if image.mode == "RGB" else image.convert("RGB")  # convert() copies even an RGB image
    except tuple(errors):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise errors.refused(f"image refused as a decompression bomb: {exc}") from None
    except Image.UnidentifiedImageError:
        raise errors.decode(f"bytes are not an image in an accepted format ({', '.join(ALLOWED_FORMATS)})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise errors.decode(f"image cannot be decoded: {exc}") from None
