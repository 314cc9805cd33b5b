import base64
import http.server
import os
import socket
import threading

import pytest
from worker_samples import bomb_png, jpeg_bytes, png_bytes

from worker.images import ImageDecodeError, ImageFetchError, ImageLoader, ImageRefused, decode_image
from worker.schemas import ImageRef
from worker.settings import ImagePolicy


def b64(data: bytes) -> ImageRef:
    return ImageRef(b64=base64.b64encode(data).decode())


def test_b64_png_loads_as_rgb():
    image = ImageLoader(ImagePolicy()).load(b64(png_bytes((1, 2, 3))))
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (1, 2, 3)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"definitely not an image", ImageDecodeError),
        (jpeg_bytes()[:400], ImageDecodeError),  # truncated JPEG
        (bomb_png(), ImageRefused),
    ],
)
def test_bad_bytes_are_refused(data, error):
    with pytest.raises(error):
        decode_image(data, max_pixels=40_000_000)


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(ImageRefused, match="pixel"):
        decode_image(png_bytes(size=(100, 100)), max_pixels=9_999)


def test_bad_base64_is_refused():
    with pytest.raises(ImageDecodeError, match="base64"):
        ImageLoader(ImagePolicy()).load(ImageRef(b64="not*base64!"))


def test_b64_over_byte_limit_is_refused():
    with pytest.raises(ImageRefused, match="byte limit"):
        ImageLoader(ImagePolicy(max_bytes=100)).load(b64(jpeg_bytes()))


@pytest.fixture
def image_root(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ok.png").write_bytes(png_bytes((5, 6, 7)))
    (tmp_path / "secret.png").write_bytes(png_bytes())
    os.symlink(tmp_path / "secret.png", root / "escape.png")
    os.symlink(root / "sub" / "ok.png", root / "inside.png")
    return root


def test_path_under_root_loads(image_root):
    loader = ImageLoader(ImagePolicy(root=image_root))
    assert loader.load(ImageRef(path="sub/ok.png")).getpixel((0, 0)) == (5, 6, 7)
    assert loader.load(ImageRef(path="inside.png")).getpixel((0, 0)) == (5, 6, 7)  # symlink within root is fine


@pytest.mark.parametrize("path", ["../secret.png", "sub/../../secret.png", "escape.png", "/etc/passwd"])
def test_path_escapes_are_refused(image_root, path):
    with pytest.raises(ImageRefused, match="outside the image root"):
        ImageLoader(ImagePolicy(root=image_root)).load(ImageRef(path=path))


def test_paths_refused_without_root():
    with pytest.raises(ImageRefused, match="no image root"):
        ImageLoader(ImagePolicy()).load(ImageRef(path="a.png"))


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if the loader tries to open any connection."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"connection attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.png",
        "http://127.0.0.1/a.png",
        "http://localhost:8080/a.png",
        "http://10.0.0.1/a.png",
        "http://192.168.1.1/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/a.png",
        "http://[::ffff:127.0.0.1]/a.png",
        "http://0.0.0.0/a.png",
        "http://224.0.0.1/a.png",
        "http://user:pw@example.com/a.png",
    ],
)
def test_url_guard_refuses_before_connecting(url, no_network):
    with pytest.raises(ImageRefused):
        ImageLoader(ImagePolicy()).load(ImageRef(url=url))


def test_allow_list_admits_a_private_network():
    loader = ImageLoader(ImagePolicy(allow=("10.0.0.0/8", "LocalHost")))
    assert loader.checked_address("10.1.2.3", 80).exploded == "10.1.2.3"
    assert loader.checked_address("localhost", 80).is_loopback
    with pytest.raises(ImageRefused):
        loader.checked_address("192.168.0.1", 80)


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}

    def do_GET(self):
        status, headers, body = self.routes[self.path]
        if status == "hang":
            threading.Event().wait(body)
            return
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def local_server():
    """An http.server on 127.0.0.1 (the only address these tests ever send traffic to)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    _Handler.routes = {
        "/ok.png": (200, {"Content-Type": "image/png"}, png_bytes((9, 8, 7))),
        "/hop": (302, {"Location": "/ok.png"}, b""),
        "/to-private": (302, {"Location": "http://10.0.0.1/x.png"}, b""),
        "/to-metadata": (302, {"Location": "http://169.254.169.254/latest/"}, b""),
        "/to-file": (302, {"Location": "file:///etc/passwd"}, b""),
        "/loop": (302, {"Location": "/loop"}, b""),
        "/big": (200, {}, b"x" * 50_000),
        "/missing": (404, {}, b""),
        "/slow": ("hang", {}, 3),
    }
    yield base
    server.shutdown()
    server.server_close()


def loopback_loader(**policy) -> ImageLoader:
    return ImageLoader(ImagePolicy(allow=("127.0.0.0/8",), **policy))


def test_url_fetch_with_loopback_allow_listed(local_server):
    assert loopback_loader().load(ImageRef(url=local_server + "/ok.png")).getpixel((0, 0)) == (9, 8, 7)
    assert loopback_loader().load(ImageRef(url=local_server + "/hop")).getpixel((0, 0)) == (9, 8, 7)


def test_loopback_refused_without_allow_list(local_server):
    with pytest.raises(ImageRefused, match="non-public"):
        ImageLoader(ImagePolicy()).load(ImageRef(url=local_server + "/ok.png"))


@pytest.mark.parametrize("route", ["/to-private", "/to-metadata", "/to-file", "/loop"])
def test_redirects_are_checked_again(local_server, route, monkeypatch):
    real_connect = socket.create_connection

    def loopback_only(address, *args, **kwargs):
        assert address[0] == "127.0.0.1", f"tried to connect to {address}"
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", loopback_only)
    with pytest.raises(ImageRefused):
        loopback_loader().load(ImageRef(url=local_server + route))


def test_byte_limit_while_streaming(local_server):
    with pytest.raises(ImageRefused, match="byte limit"):
        loopback_loader(max_bytes=10_000).load(ImageRef(url=local_server + "/big"))


def test_http_error_status(local_server):
    with pytest.raises(ImageFetchError, match="404"):
        loopback_loader().load(ImageRef(url=local_server + "/missing"))


def test_read_timeout(local_server):
    with pytest.raises(ImageFetchError):
        loopback_loader(read_timeout_s=0.3).load(ImageRef(url=local_server + "/slow"))


def test_only_raster_formats_are_decoded():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(ImageDecodeError, match="accepted format"):
        decode_image(eps, max_pixels=40_000_000)


def test_b64_with_line_breaks_is_accepted():
    text = base64.encodebytes(png_bytes((4, 5, 6))).decode()  # 76-char lines
    assert "\n" in text
    assert ImageLoader(ImagePolicy()).load(ImageRef(b64=text)).getpixel((0, 0)) == (4, 5, 6)
