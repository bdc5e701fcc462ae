"""The webhook's TLS context reloads a rotated certificate in place: real handshakes on a local
socket present the new certificate after the reload, and a half-written pair is skipped."""

from __future__ import annotations

import shutil
import socket
import ssl
import threading

import pytest

from autoglm_operator.admission.certificates import ReloadingServerContext, ensure_webhook_certificate

HOSTS = ["127.0.0.1"]


def _served_certificate(context: ssl.SSLContext, ca_file) -> bytes:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def accept():
        conn, _ = server.accept()
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass
    worker = threading.Thread(target=accept)
    worker.start()
    client = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(server.getsockname()) as raw, client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
        tls.send(b"x")
    worker.join(5)
    server.close()
    return der


def test_rotated_certificate_is_served_after_reload_without_a_new_context(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    ensure_webhook_certificate(first, HOSTS)
    ensure_webhook_certificate(second, HOSTS)
    live = tmp_path / "live"
    shutil.copytree(first, live)
    tls = ReloadingServerContext(live / "tls.crt", live / "tls.key")
    before = _served_certificate(tls.context, first / "ca.crt")
    assert tls.reload() is False  # unchanged files: nothing to do

    # a half-written rotation (new certificate, old key) is refused and the old pair stays served
    shutil.copy2(second / "tls.crt", live / "tls.crt")
    with pytest.raises(ssl.SSLError):
        tls.reload()
    assert _served_certificate(tls.context, first / "ca.crt") == before

    shutil.copy2(second / "tls.key", live / "tls.key")
    assert tls.reload() is True and tls.reloads == 1
    after = _served_certificate(tls.context, second / "ca.crt")  # the new CA verifies what is served now
    assert after != before
