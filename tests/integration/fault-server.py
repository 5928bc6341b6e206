#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A fault-injecting HTTPS server for the OTA tests (issue #9 §1).

The first path component names the fault, the rest the file under --root:
GET /reset/fw.bin serves fw.bin with the "reset" fault, /ok/fw.bin serves it
as a correct server would (200, or 206 for "Range: bytes=N-"). Every fault
applies to every request on its path, so that a device that retries meets
it again and its outcome is the fault's, not a lucky second try's.

Connection:
  reset          200/206, STEP body bytes, then a TCP reset (SO_LINGER 0)
  stall          200/206, STEP body bytes, then nothing until the client leaves
  trickle        200/206, STEP body bytes, then one byte a second
Status:
  status-404     404 Not Found
  status-500     500 Internal Server Error
  status-503     503 with Retry-After: "1" on odd requests, an HTTP-date an hour
                 ahead on even ones (a device caps it by its backoff maximum)
  range-416      a GET without Range: 200, cut after STEP bytes (FIN, no
                 close_notify); "Range: bytes=N-": 416 with "bytes */SIZE"
Body:
  cl-short       Content-Length: SIZE/2, then the whole file
  cl-long        Content-Length 4,096 more than the body (206: Content-Range
                 likewise), the body, then a clean TLS close
  chunked-bad    chunked encoding, STEP bytes in chunks, then a chunk-size line
                 that is not hexadecimal
  truncate       Content-Length right, the body cut at a random offset (10-90 %
                 of it), then a clean TLS close
  flip           the whole file with one byte flipped at a random offset past
                 the first 4 KiB and before the signature sector
Redirects:
  redirect-loop  302 to /redirect-loop2/FILE, which sends 302 back here
  redirect-http  302 to http://localhost:PORT/ok/FILE
TLS (--mode alert): after the ClientHello, a fatal handshake_failure alert.
Certificate faults need no mode: start a server with the odd certificate.

Log (--log): one line per connection, key=value, e.g.
  conn=3 path=/reset/fw.bin range=bytes=16384- status=206 sent=20000 fault=reset
  conn=4 tls-error='[SSL: TLSV1_ALERT_UNKNOWN_CA] …'
The port (bound by the server: no race for a free one) goes to --port-file.
"""

import argparse
import email.utils
import fcntl
import os
import random
import re
import select
import socket
import ssl
import struct
import sys
import termios
import threading
import time

STEP = 20000          # body bytes sent before a connection fault
CHUNK = 4096

log_lock = threading.Lock()
counter_lock = threading.Lock()
counters = {}


def note(args, line):
    with log_lock:
        with open(args.log, "a") as f:
            f.write(line + "\n")


def count(key):
    with counter_lock:
        counters[key] = counters.get(key, 0) + 1
        return counters[key]


def read_request(c):
    head = b""
    while b"\r\n\r\n" not in head:
        b = c.recv(4096)
        if not b:
            return None
        head += b
        if len(head) > 65536:
            return None
    lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3:
        return None
    hdrs = {}
    for l in lines[1:]:
        if ":" in l:
            k, v = l.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return parts[0], parts[1], hdrs


def response(status, reason, headers, body=b""):
    h = f"HTTP/1.1 {status} {reason}\r\n"
    for k, v in headers:
        h += f"{k}: {v}\r\n"
    h += "Connection: close\r\n\r\n"
    return h.encode("latin-1") + body


def wait_client_gone(c, limit):
    """Until the client closes (or `limit` seconds): the stall fault."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        r, _, _ = select.select([c], [], [], 1.0)
        if r:
            try:
                if not c.recv(4096):
                    return
            except (OSError, ssl.SSLError):
                return


def tls_close(c):
    """A clean end: close_notify, then FIN."""
    try:
        c.unwrap().close()
    except (OSError, ssl.SSLError):
        c.close()


def tcp_reset(c):
    # A reset discards whatever is still in our send queue: wait until the
    # peer has acknowledged every byte (TIOCOUTQ = SIOCOUTQ: bytes not yet
    # acknowledged), so that the client sees the body up to the reset.
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if struct.unpack("i", fcntl.ioctl(c.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0] == 0:
            break
        time.sleep(0.01)
    # SO_LINGER with a zero timeout: close() sends RST, not FIN
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


class Handler:
    def __init__(self, args, seed):
        self.args = args
        self.seed = seed
        self.rngs = {}
        self.flips = {}

    def rng(self, fault):
        # one generator per fault: a device's requests come one after the
        # other, so --seed replays its offsets whatever the other threads do
        if fault not in self.rngs:
            self.rngs[fault] = random.Random(f"{self.seed}/{fault}")
        return self.rngs[fault]

    def flip_at(self, size):
        # one offset per file size, the same for every request
        if size not in self.flips:
            self.flips[size] = self.rng("flip").randrange(4096, max(4097, size - 8192))
        return self.flips[size]

    def serve(self, c, conn):
        args = self.args
        req = read_request(c)
        if req is None:
            note(args, f"conn={conn} no-request")
            c.close()
            return
        method, target, hdrs = req
        rng_hdr = hdrs.get("range")
        m = re.fullmatch(r"/([a-z0-9-]+)/([^/?]+)", target)
        if not m:
            c.sendall(response(400, "Bad Request", [("Content-Length", "0")]))
            note(args, f"conn={conn} path={target} status=400 sent=0")
            c.close()
            return
        fault, name = m.group(1), m.group(2)
        fn = os.path.join(args.root, name)
        if not os.path.isfile(fn):
            c.sendall(response(404, "Not Found", [("Content-Length", "0")]))
            note(args, f"conn={conn} path={target} status=404 sent=0 (no such file)")
            c.close()
            return
        data = bytearray(open(fn, "rb").read())
        size = len(data)
        start = 0
        rm = re.fullmatch(r"bytes=(\d+)-", rng_hdr or "")
        if rm:
            start = int(rm.group(1))

        def done(status, sent, extra=""):
            note(args, f"conn={conn} path={target} range={rng_hdr or '-'} status={status} sent={sent} "
                       f"fault={fault}{extra}")

        def head_for(body_len, total=None):
            total = size if total is None else total
            if rm and start < size:
                return 206, "Partial Content", [("Content-Length", str(body_len)),
                                                ("Content-Range", f"bytes {start}-{start + body_len - 1}/{total}")]
            return 200, "OK", [("Content-Length", str(body_len))]

        if fault == "cl-long" and rm and size <= start < size + 4096:
            # the same lie for a resumption past the real end: a 206 that
            # announces the missing bytes and has none
            c.sendall(response(206, "Partial Content",
                               [("Content-Length", str(size + 4096 - start)),
                                ("Content-Range", f"bytes {start}-{size + 4095}/{size + 4096}")]))
            done(206, 0, f" content-length={size + 4096 - start}")
            tls_close(c)
            return
        if rm and start >= size and fault != "range-416":
            c.sendall(response(416, "Range Not Satisfiable", [("Content-Range", f"bytes */{size}"),
                                                              ("Content-Length", "0")]))
            done(416, 0)
            c.close()
            return
        body = bytes(data[start:]) if rm else bytes(data)

        if fault == "ok":
            st, rs, h = head_for(len(body))
            c.sendall(response(st, rs, h, body))
            done(st, len(body))
            tls_close(c)
        elif fault in ("reset", "stall", "trickle"):
            st, rs, h = head_for(len(body))
            part = body[:STEP]
            c.sendall(response(st, rs, h, part))
            sent = len(part)
            if fault == "reset":
                tcp_reset(c)
            elif fault == "stall":
                wait_client_gone(c, 120)
                c.close()
            else:
                try:
                    for b in body[STEP:]:
                        time.sleep(1)
                        c.sendall(bytes([b]))
                        sent += 1
                except (OSError, ssl.SSLError):
                    pass
                c.close()
            done(st, sent)
        elif fault in ("status-404", "status-500"):
            code = int(fault[-3:])
            text = f"fault-server: {code}\n".encode()
            c.sendall(response(code, "Not Found" if code == 404 else "Internal Server Error",
                               [("Content-Length", str(len(text))), ("Content-Type", "text/plain")], text))
            done(code, 0)
            tls_close(c)
        elif fault == "status-503":
            n = count(target)
            if n % 2 == 1:
                ra = "1"
            else:
                ra = email.utils.formatdate(time.time() + 3600, usegmt=True)
            text = b"fault-server: 503\n"
            c.sendall(response(503, "Service Unavailable",
                               [("Retry-After", ra), ("Content-Length", str(len(text)))], text))
            done(503, 0, f" retry-after='{ra}'")
            tls_close(c)
        elif fault == "range-416":
            if rng_hdr:
                c.sendall(response(416, "Range Not Satisfiable", [("Content-Range", f"bytes */{size}"),
                                                                  ("Content-Length", "0")]))
                done(416, 0)
                tls_close(c)
            else:
                c.sendall(response(200, "OK", [("Content-Length", str(size))], body[:STEP]))
                done(200, STEP, " (cut)")
                c.shutdown(socket.SHUT_RDWR)
                c.close()
        elif fault == "cl-short":
            c.sendall(response(200, "OK", [("Content-Length", str(size // 2))], body))
            done(200, len(body), f" content-length={size // 2}")
            tls_close(c)
        elif fault == "cl-long":
            st, rs, h = head_for(len(body) + 4096, size + 4096)
            c.sendall(response(st, rs, h, body))
            done(st, len(body), f" content-length={len(body) + 4096}")
            tls_close(c)
        elif fault == "chunked-bad":
            h = [("Transfer-Encoding", "chunked")]
            st, rs = 200, "OK"
            if rm and start < size:
                st, rs = 206, "Partial Content"
                h.append(("Content-Range", f"bytes {start}-{size - 1}/{size}"))
            out = bytearray(response(st, rs, h))
            sent = 0
            while sent < min(STEP, len(body)):
                piece = body[sent:sent + CHUNK]
                out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
                sent += len(piece)
            out += b"zz-not-hex\r\n" + body[sent:sent + CHUNK]
            c.sendall(bytes(out))
            done(st, sent, " (broken chunk)")
            tls_close(c)
        elif fault == "truncate":
            lo = len(body) // 10
            cut = self.rng("truncate").randrange(lo, max(lo + 1, len(body) * 9 // 10))
            st, rs, h = head_for(len(body))
            c.sendall(response(st, rs, h, body[:cut]))
            done(st, cut, f" cut-at={start + cut}")
            tls_close(c)
        elif fault == "flip":
            flipped = bytearray(body)
            at = self.flip_at(size) - start
            if 0 <= at < len(flipped):
                flipped[at] ^= 0x01
            st, rs, h = head_for(len(flipped))
            c.sendall(response(st, rs, h, bytes(flipped)))
            done(st, len(flipped), f" flipped-at={at + start}")
            tls_close(c)
        elif fault in ("redirect-loop", "redirect-loop2"):
            other = "redirect-loop2" if fault == "redirect-loop" else "redirect-loop"
            c.sendall(response(302, "Found", [("Location", f"/{other}/{name}"), ("Content-Length", "0")]))
            done(302, 0)
            tls_close(c)
        elif fault == "redirect-http":
            loc = f"http://localhost:{args.bound_port}/ok/{name}"
            c.sendall(response(302, "Found", [("Location", loc), ("Content-Length", "0")]))
            done(302, 0, f" location={loc}")
            tls_close(c)
        else:
            c.sendall(response(400, "Bad Request", [("Content-Length", "0")]))
            done(400, 0, " (unknown fault)")
            c.close()


def read_client_hello(raw):
    """Reads one whole TLS record (the ClientHello) off the raw socket."""
    buf = b""
    while len(buf) < 5:
        b = raw.recv(5 - len(buf))
        if not b:
            return False
        buf += b
    need = struct.unpack("!H", buf[3:5])[0]
    got = 0
    while got < need:
        b = raw.recv(need - got)
        if not b:
            return False
        got += len(b)
    return buf[0] == 0x16   # handshake


def client(args, ctx, handler, raw, conn):
    raw.settimeout(30)
    try:
        if args.mode == "alert":
            if read_client_hello(raw):
                # alert record, TLS 1.2 framing: level 2 (fatal), 40 (handshake_failure)
                raw.sendall(b"\x15\x03\x03\x00\x02\x02\x28")
                note(args, f"conn={conn} handshake-alert")
            else:
                note(args, f"conn={conn} no-client-hello")
            raw.close()
            return
        try:
            c = ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError) as e:
            note(args, f"conn={conn} tls-error='{e}'")
            raw.close()
            return
        handler.serve(c, conn)
    except (OSError, ssl.SSLError) as e:
        note(args, f"conn={conn} error='{e}'")
        try:
            raw.close()
        except OSError:
            pass


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--port-file", required=True)
    p.add_argument("--mode", choices=("https", "alert"), default="https")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    srv = socket.create_server(("127.0.0.1", 0), backlog=64)
    args.bound_port = srv.getsockname()[1]
    note(args, f"listening port={args.bound_port} mode={args.mode} seed={seed}")
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{args.bound_port}\n")
    os.rename(tmp, args.port_file)

    handler = Handler(args, seed)
    conn = 0
    while True:
        raw, _ = srv.accept()
        conn += 1
        threading.Thread(target=client, args=(args, ctx, handler, raw, conn), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
