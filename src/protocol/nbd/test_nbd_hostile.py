#!/usr/bin/env python3
"""qimg against a hostile NBD server: a small fixed-newstyle server (below)
that answers the handshake correctly and then lies in its replies (sizes,
block sizes, block-status extents of length zero or past the request,
short reads). qimg must fail with a message or answer sanely, never crash
or hang. Registered by this folder's CMakeLists.txt as interop.test_nbd_hostile.

    test_nbd_hostile.py --qimg build/qimg
"""
import argparse
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x0003E889045565A9
REQ_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
STRUCT_MAGIC = 0x668E33EF

OPT_EXPORT_NAME, OPT_ABORT, OPT_INFO, OPT_GO = 1, 2, 6, 7
OPT_STRUCTURED_REPLY, OPT_SET_META_CONTEXT = 8, 10
REP_ACK, REP_INFO, REP_META_CONTEXT = 1, 3, 4
REP_ERR_UNSUP = (1 << 31) + 1
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_BLOCK_STATUS = 0, 1, 2, 3, 7
REPLY_TYPE_NONE, REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_BLOCK_STATUS = 0, 1, 5
FLAG_HAS_FLAGS, FLAG_SEND_FLUSH = 1, 4
INFO_EXPORT, INFO_BLOCK_SIZE = 0, 3


def recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


class HostileServer:
    """Serves one behaviour (`mode`) on a unix socket, to any number of clients."""

    def __init__(self, path, mode, size=1 << 20, min_block=1, max_block=1 << 20):
        self.mode, self.size = mode, size
        self.min_block, self.max_block = min_block, max_block
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def opt_reply(self, conn, opt, rtype, data=b""):
        conn.sendall(struct.pack(">QIII", REPLY_MAGIC, opt, rtype, len(data)) + data)

    def serve(self, conn):
        try:
            self.handshake(conn)
            self.transmission(conn)
        except (EOFError, OSError):
            pass
        finally:
            conn.close()

    def handshake(self, conn):
        conn.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, 1 | 2))
        recv_exact(conn, 4)
        while True:
            magic, opt, length = struct.unpack(">QII", recv_exact(conn, 16))
            data = recv_exact(conn, length)
            if opt == OPT_STRUCTURED_REPLY:
                self.opt_reply(conn, opt, REP_ACK)
            elif opt == OPT_SET_META_CONTEXT:
                name_len = struct.unpack(">I", data[:4])[0]
                pos = 4 + name_len
                count = struct.unpack(">I", data[pos:pos + 4])[0]
                pos += 4
                for _ in range(count):
                    qlen = struct.unpack(">I", data[pos:pos + 4])[0]
                    query = data[pos + 4:pos + 4 + qlen]
                    pos += 4 + qlen
                    if query == b"base:allocation":
                        self.opt_reply(conn, opt, REP_META_CONTEXT, struct.pack(">I", 1) + query)
                self.opt_reply(conn, opt, REP_ACK)
            elif opt in (OPT_GO, OPT_INFO):
                size = self.size
                self.opt_reply(conn, opt, REP_INFO, struct.pack(">HQH", INFO_EXPORT, size, FLAG_HAS_FLAGS | FLAG_SEND_FLUSH))
                self.opt_reply(conn, opt, REP_INFO,
                               struct.pack(">HIII", INFO_BLOCK_SIZE, self.min_block, 4096, self.max_block))
                self.opt_reply(conn, opt, REP_ACK)
                if opt == OPT_GO:
                    return
            elif opt == OPT_ABORT:
                raise EOFError
            else:
                self.opt_reply(conn, opt, REP_ERR_UNSUP)

    def transmission(self, conn):
        reads = 0
        while True:
            magic, flags, cmd, cookie, offset, length = struct.unpack(">IHHQQI", recv_exact(conn, 28))
            if cmd == CMD_WRITE:
                recv_exact(conn, length)
            if cmd == CMD_DISC:
                return
            if cmd == CMD_READ:
                reads += 1
                if self.mode == "hangup" and reads > 3:  # the server goes away mid-copy
                    raise EOFError
                self.read_reply(conn, cookie, offset, length)
            elif cmd == CMD_BLOCK_STATUS:
                self.status_reply(conn, cookie, offset, length)
            else:
                conn.sendall(struct.pack(">IIQ", SIMPLE_MAGIC, 0, cookie))

    def structured(self, conn, cookie, rtype, payload, done=True):
        conn.sendall(struct.pack(">IHHQI", STRUCT_MAGIC, 1 if done else 0, rtype, cookie, len(payload)) + payload)

    def read_reply(self, conn, cookie, offset, length):
        if self.mode == "short-read":  # fewer bytes than asked, then done
            self.structured(conn, cookie, REPLY_TYPE_OFFSET_DATA, struct.pack(">Q", offset) + b"\x11" * (length // 2))
            return
        if self.mode == "read-outside":  # data for an offset outside the request
            self.structured(conn, cookie, REPLY_TYPE_OFFSET_DATA,
                            struct.pack(">Q", offset + length) + b"\x22" * length)
            return
        self.structured(conn, cookie, REPLY_TYPE_OFFSET_DATA, struct.pack(">Q", offset) + b"\x33" * length)

    def status_reply(self, conn, cookie, offset, length):
        extents = {
            "zero-extent": [(0, 0)],
            "huge-extent": [(0xFFFFFFFF, 0)],
            "tiny-extents": [(1, 3), (1, 0)],
            "unaligned-extent": [(length - 1 if length > 1 else 1, 2)],
            "unknown-flags": [(length, 0xFFFFFFFF)],
            "no-extents": [],
        }.get(self.mode, [(length, 0)])
        payload = struct.pack(">I", 1) + b"".join(struct.pack(">II", l, f) for l, f in extents)
        self.structured(conn, cookie, REPLY_TYPE_BLOCK_STATUS, payload)


def run(qimg, *args, timeout=60):
    p = subprocess.run([qimg, *args], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    qimg = os.path.abspath(ap.parse_args().qimg)
    failures = []
    cases = [
        # mode, server size/min/max, commands (args), allowed exit codes
        ("zero-extent", {}, [["map", "--output=json"]], {1}),
        ("huge-extent", {}, [["map", "--output=json"], ["convert", "-O", "raw", "@", "out.raw"]], {0}),
        ("tiny-extents", {"min_block": 512}, [["map", "--output=json"]], {0}),
        ("unaligned-extent", {"min_block": 4096}, [["map", "--output=json"]], {0}),
        ("unknown-flags", {}, [["map", "--output=json"]], {0}),
        ("no-extents", {}, [["map", "--output=json"]], {1}),
        # libnbd zeroes read buffers first: what the server leaves out reads as zeroes.
        ("short-read", {}, [["convert", "-O", "raw", "@", "out.raw"]], {0, 1}),
        ("read-outside", {}, [["convert", "-O", "raw", "@", "out.raw"]], {1}),
        ("hangup", {"size": 64 << 20}, [["convert", "-O", "raw", "@", "out.raw"]], {1}),
        ("honest", {"size": (1 << 63) - 1}, [["info"]], {0}),
        ("honest", {"size": 1000, "min_block": 512}, [["info"], ["convert", "-O", "raw", "@", "out.raw"]], {1}),
        # Block sizes libnbd ignores (not a power of two, too large) or qimg refuses.
        ("honest", {"min_block": 3}, [["info"]], {0, 1}),
        ("honest", {"min_block": 1 << 20}, [["info"]], {0, 1}),
        ("honest", {"min_block": 4096, "max_block": 1000}, [["convert", "-O", "raw", "@", "out.raw"]], {0}),
    ]
    with tempfile.TemporaryDirectory(prefix="qimg-nbd-") as d:
        for i, (mode, params, commands, allowed) in enumerate(cases):
            path = os.path.join(d, f"s{i}")
            srv = HostileServer(path, mode, **params)
            name = f"nbd+unix:///?socket={path}"
            for cmd in commands:
                args = [a if a != "@" else name for a in cmd]
                if "@" not in cmd:
                    args.append(name)
                args = [os.path.join(d, a) if a == "out.raw" else a for a in args]
                try:
                    rc, out, err = run(qimg, *args)
                except subprocess.TimeoutExpired:
                    failures.append(f"{mode} {params} {cmd}: timed out")
                    continue
                ok = rc in allowed and (rc == 0 or err.strip())
                print(f"{'ok  ' if ok else 'FAIL'} {mode} {params} {' '.join(cmd)}: rc={rc} {err.strip()[:120]}")
                if not ok:
                    failures.append(f"{mode} {params} {cmd}: rc={rc}\n{out}{err}")
            srv.sock.close()
    for f in failures:
        print("FAILED:", f, file=sys.stderr)
    print(f"{len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
