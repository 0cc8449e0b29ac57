"""What a long-running check process holds: file descriptors, sockets, threads, resident memory; and a bare `/info`.

The soak test and the benchmark read these around repeated check runs. Linux only: everything comes from /proc.
This module is not part of the wheel that goes into an Agent.
"""

from __future__ import annotations

import os
import re
import socket
import threading

READER_THREAD = 'cis_docker-info'


def open_fds() -> int:
    return len(os.listdir('/proc/self/fd'))


def socket_inodes() -> frozenset[int]:
    """The kernel identities of every socket this process holds: a new connection shows up as a new inode."""
    inodes = set()
    for fd in os.listdir('/proc/self/fd'):
        try:
            target = os.readlink(f'/proc/self/fd/{fd}')
        except OSError:  # the descriptor used by listdir itself is gone by now
            continue
        if target.startswith('socket:['):
            inodes.add(int(target[8:-1]))
    return frozenset(inodes)


def rss_bytes(pid: int | str = 'self') -> int:
    with open(f'/proc/{pid}/status') as status:
        match = re.search(r'^VmRSS:\s+(\d+) kB', status.read(), re.MULTILINE)
    return int(match.group(1)) * 1024


def reader_threads() -> frozenset[threading.Thread]:
    """The live threads that read /info for a check; thread objects, as idents are reused once a thread ends."""
    return frozenset(thread for thread in threading.enumerate() if thread.name == READER_THREAD)


class RawInfo:
    """`GET /info` over one kept-alive unix-socket connection with no HTTP library: the floor any client stands on."""

    def __init__(self, socket_path: str | os.PathLike):
        self.socket_path = str(socket_path)
        self.sock: socket.socket | None = None
        self.request = b'GET /info HTTP/1.1\r\nHost: docker\r\n\r\n'

    def get(self) -> bytes:
        if self.sock is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(self.socket_path)
        self.sock.sendall(self.request)
        buffer = b''
        while b'\r\n\r\n' not in buffer:
            buffer += self._recv()
        head, _, body = buffer.partition(b'\r\n\r\n')
        headers = head.decode('latin-1').lower()
        if not headers.startswith('http/1.1 200'):
            raise RuntimeError(f'unexpected answer: {headers.splitlines()[0]}')
        length = re.search(r'\r\ncontent-length:\s*(\d+)', headers)
        if length:
            while len(body) < int(length.group(1)):
                body += self._recv()
            return body
        return self._dechunk(body)

    def _dechunk(self, pending: bytes) -> bytes:
        body = bytearray()
        while True:
            while b'\r\n' not in pending:
                pending += self._recv()
            size_line, _, pending = pending.partition(b'\r\n')
            size = int(size_line.split(b';')[0], 16)
            while len(pending) < size + 2:
                pending += self._recv()
            body += pending[:size]
            pending = pending[size + 2 :]
            if size == 0:
                return bytes(body)

    def _recv(self) -> bytes:
        data = self.sock.recv(1 << 20)
        if not data:
            raise RuntimeError('the engine closed the connection')
        return data

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
