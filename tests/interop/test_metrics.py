"""GET /metrics read by Prometheus' own Python parser (`prometheus_client`, PyPI), before
and after some load on a real node: the exposition parses, and the counters move.

Run by scripts/test-all: python -m unittest discover -s tests/interop
KUZZLE_RT_BIN names the binary (default: target/debug/kuzzle-rt).
"""

import asyncio
import json
import urllib.request
import unittest

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as prometheus_families
from websockets.asyncio.client import connect

from test_websockets import Node


OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def scrape(base, accept=OPENMETRICS):
    """The samples of /metrics, read by the parser of the format the node answered."""
    request = urllib.request.Request(f"{base}/metrics", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=10) as response:
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    parse = (openmetrics_families if content_type.startswith("application/openmetrics-text")
             else prometheus_families)
    samples = {}
    for family in parse(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = sample.value
    return content_type, samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def load(url, publishes):
    async with connect(url) as subscriber, connect(url) as publisher:
        await subscriber.send(json.dumps({
            "controller": "realtime", "action": "subscribe", "index": "i",
            "collection": "c", "body": {}, "requestId": "s"}))
        json.loads(await subscriber.recv())
        for i in range(publishes):
            await publisher.send(json.dumps({
                "controller": "realtime", "action": "publish", "index": "i",
                "collection": "c", "body": {"i": i}, "requestId": f"p{i}"}))
            json.loads(await publisher.recv())
        for _ in range(publishes):
            json.loads(await subscriber.recv())


class Metrics(unittest.TestCase):
    def setUp(self):
        self.node = Node(compression=False)
        self.base = self.node.url.replace("ws://", "http://")

    def tearDown(self):
        self.node.stop()

    def test_the_exposition_parses_and_counters_move_under_load(self):
        content_type, before = scrape(self.base)
        self.assertTrue(content_type.startswith("application/openmetrics-text"), content_type)
        asyncio.run(load(self.node.url, 50))
        _, after = scrape(self.base)
        publish = {"controller": "realtime", "action": "publish", "status": "200"}
        self.assertEqual(value(after, "kuzzle_requests_total", **publish)
                         - value(before, "kuzzle_requests_total", **publish), 50)
        self.assertEqual(value(after, "kuzzle_deliveries_total")
                         - value(before, "kuzzle_deliveries_total"), 50)
        self.assertEqual(value(after, "kuzzle_notifications_published_total"), 50)
        accepted = ("kuzzle_connections_accepted_total", {"protocol": "websocket"})
        self.assertEqual(value(after, accepted[0], **accepted[1]), 2)
        self.assertEqual(value(after, "kuzzle_request_duration_seconds_count",
                               controller="realtime", action="publish"), 50)
        self.assertEqual(value(after, "kuzzle_cluster_nodes_alive"), 1)

    def test_a_scraper_that_does_not_ask_for_openmetrics_reads_the_0_0_4_format(self):
        asyncio.run(load(self.node.url, 5))
        content_type, samples = scrape(self.base, accept="text/plain;version=0.0.4")
        self.assertEqual(content_type, "text/plain; version=0.0.4; charset=utf-8")
        _, openmetrics = scrape(self.base)
        publish = {"controller": "realtime", "action": "publish", "status": "200"}
        self.assertEqual(value(samples, "kuzzle_requests_total", **publish), 5)
        self.assertEqual(value(samples, "kuzzle_deliveries_total"), 5)
        # The same series in both formats (the 0.0.4 scrape came first: counters only grow).
        self.assertLessEqual(set(samples), set(openmetrics))


if __name__ == "__main__":
    unittest.main()
