"""permessage-deflate against Python's `websockets` client, on real kuzzle-rt nodes.

Run by scripts/test-all: python -m unittest discover -s tests/interop
KUZZLE_RT_BIN names the binary (default: target/debug/kuzzle-rt).
"""

import asyncio
import json
import os
import re
import subprocess
import tempfile
import unittest
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

ROOT = Path(__file__).resolve().parents[2]
BINARY = os.environ.get("KUZZLE_RT_BIN", str(ROOT / "target" / "debug" / "kuzzle-rt"))


class Node:
    """A kuzzle-rt process on 127.0.0.1 and a free port, in a temporary directory."""

    def __init__(self, compression):
        self.dir = tempfile.TemporaryDirectory(prefix="kuzzle-rt-py-")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": self.dir.name,
            "RUST_LOG": "info",
            "kuzzle_server__host": "127.0.0.1",
            "kuzzle_server__port": "0",
            "kuzzle_server__protocols__websocket__compression": "true" if compression else "false",
        }
        self.process = subprocess.Popen(
            [BINARY], cwd=self.dir.name, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        log = ""
        for line in self.process.stderr:
            log += line
            found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if found:
                self.url = f"ws://127.0.0.1:{found.group(1)}"
                break
        else:
            raise RuntimeError(f"the node did not start:\n{log}")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=20)
        self.process.stderr.close()
        self.dir.cleanup()


class CountingDeflate(ClientPerMessageDeflateFactory):
    """websockets' own permessage-deflate, counting the frames that arrive compressed."""

    def __init__(self, **params):
        super().__init__(**params)
        self.compressed = 0
        self.agreed = None

    def process_response_params(self, params, accepted_extensions):
        extension = super().process_response_params(params, accepted_extensions)
        self.agreed = list(params)
        decode = extension.decode

        def counting_decode(frame, *, max_size=None):
            if frame.rsv1:
                self.compressed += 1
            return decode(frame, max_size=max_size)

        extension.decode = counting_decode
        return extension


def big_document(seq):
    rows = [{"sensor": f"sensor-{i}", "temperature": 20 + i % 7, "unit": "celsius"} for i in range(300)]
    return {"seq": seq, "rows": rows}


async def request(ws, body):
    await ws.send(json.dumps(body))
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if message.get("requestId") == body["requestId"]:
            return message


class Compression(unittest.IsolatedAsyncioTestCase):
    def setUp(self):
        self.node = Node(compression=True)

    def tearDown(self):
        self.node.stop()

    async def publish_and_receive(self, subscriber, publisher, count):
        answer = await request(subscriber, {
            "controller": "realtime", "action": "subscribe", "index": "i",
            "collection": "c", "body": {}, "requestId": "sub"})
        self.assertEqual(answer["status"], 200)
        for seq in range(count):
            answer = await request(publisher, {
                "controller": "realtime", "action": "publish", "index": "i",
                "collection": "c", "body": big_document(seq), "requestId": f"pub-{seq}"})
            self.assertEqual(answer["status"], 200, answer)
        for seq in range(count):
            source = json.loads(await asyncio.wait_for(subscriber.recv(), 5))["result"]["_source"]
            self.assertEqual({"seq": source["seq"], "rows": source["rows"]}, big_document(seq))

    async def test_default_offer(self):
        counting = CountingDeflate()
        async with connect(self.node.url, extensions=[counting], compression=None) as subscriber, \
                connect(self.node.url, compression="deflate") as publisher:
            self.assertEqual(
                subscriber.response.headers["Sec-WebSocket-Extensions"],
                "permessage-deflate; server_no_context_takeover")
            answer = await request(subscriber, {"controller": "server", "action": "now", "requestId": "now"})
            self.assertEqual(answer["status"], 200)
            self.assertEqual(counting.compressed, 0, "small answers are sent plain")
            # The publisher compresses its large requests (context kept between them).
            await self.publish_and_receive(subscriber, publisher, 2)
            self.assertEqual(counting.compressed, 2)

    async def test_eight_bit_server_window_without_client_context(self):
        counting = CountingDeflate(server_max_window_bits=8, client_no_context_takeover=True)
        async with connect(self.node.url, extensions=[counting], compression=None) as ws, \
                connect(self.node.url, extensions=[
                    ClientPerMessageDeflateFactory(client_no_context_takeover=True)],
                    compression=None) as publisher:
            self.assertEqual(
                ws.response.headers["Sec-WebSocket-Extensions"],
                "permessage-deflate; server_no_context_takeover; "
                "client_no_context_takeover; server_max_window_bits=8")
            # websockets inflates with the 8-bit window it asked for: a reference further
            # back than 256 bytes would fail here.
            await self.publish_and_receive(ws, publisher, 3)
            self.assertEqual(counting.compressed, 3)


class NoCompression(unittest.IsolatedAsyncioTestCase):
    async def test_an_offer_to_a_node_without_compression(self):
        node = Node(compression=False)
        try:
            async with connect(node.url, compression="deflate") as ws:
                self.assertNotIn("Sec-WebSocket-Extensions", ws.response.headers)
                answer = await request(ws, {"controller": "server", "action": "now", "requestId": "a"})
                self.assertEqual(answer["status"], 200)
        finally:
            node.stop()

    async def test_no_offer_to_a_node_with_compression(self):
        node = Node(compression=True)
        try:
            async with connect(node.url, compression=None) as ws:
                self.assertNotIn("Sec-WebSocket-Extensions", ws.response.headers)
                answer = await request(ws, {"controller": "server", "action": "now", "requestId": "a"})
                self.assertEqual(answer["status"], 200)
        finally:
            node.stop()


if __name__ == "__main__":
    unittest.main()
