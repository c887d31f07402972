"""A plain asyncio client that writes one 2 MiB message (the limit is 1 MiB) and only then
reads: it must see the node's 1009 close frame, not a reset (issue 17). The node reads and
discards what the client still sends after the violation, so that the client's unread
bytes do not turn the close into a reset.

Run by scripts/test-all: python -m unittest discover -s tests/interop
"""

import asyncio
import os
import struct
import unittest

from test_websockets import Node

RUNS = 20


async def oversized_then_read(port):
    """The close code the client sees, or the exception that ended the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = b" " * (2 << 20)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload[:4])) * (len(payload) // 4)
    # Spaces masked with a repeating key: the masked payload repeats every 4 bytes.
    frame = bytes([0x81, 0x80 | 127]) + struct.pack(">Q", len(payload)) + mask + masked
    try:
        writer.write(frame)
        await writer.drain()
        while True:
            first, second = await reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack(">H", await reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack(">Q", await reader.readexactly(8))
            body = await reader.readexactly(length)
            if first & 0x0F == 0x8:
                return struct.unpack(">H", body[:2])[0] if len(body) >= 2 else None
    except (ConnectionError, asyncio.IncompleteReadError) as error:
        return type(error).__name__
    finally:
        writer.close()


class OversizedMessage(unittest.TestCase):
    def test_the_client_sees_1009_not_a_reset(self):
        node = Node(compression=False)
        try:
            port = int(node.url.rsplit(":", 1)[1])
            seen = [asyncio.run(oversized_then_read(port)) for _ in range(RUNS)]
        finally:
            node.stop()
        self.assertGreaterEqual(seen.count(1009), RUNS - 1, seen)


if __name__ == "__main__":
    unittest.main()
