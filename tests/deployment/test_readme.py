"""The README's quick start, followed as a newcomer would (issue 22).

The command blocks marked `<!-- quickstart: NAME -->` are read from README.md, not copied
here, and run with bash. Three things are given to them, and only these: where to listen
(a free port instead of 7512, through `kuzzle_server__port` for the node (and
`kuzzle_server__host` 127.0.0.1) and `--port`,
`--first-node-port` for cluster/run, so that the test cannot collide with anything on this
machine), the binary (the one the test run built: `cargo run --release` goes to a `cargo`
stand-in that starts it, since a release build would double CI's compile time), and
`--clean` for cluster/run. Docker is not available here: docker-compose.yml is parsed by
test_deployment.py.
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import tempfile
import time
import unittest

from test_deployment import ROOT, free_ports

MARK = re.compile(r"<!-- quickstart: ([a-z-]+) -->\n```sh\n(.*?)```", re.S)
BINARY = os.environ.get("KUZZLE_RT_BIN", str(ROOT / "target/debug/kuzzle-rt"))
CARGO = """#!/bin/sh
# The README's `cargo run --release [-- ARGS]`, with the binary this test run built.
[ "$1" = run ] && [ "$2" = --release ] || { echo "unexpected: cargo $*" >&2; exit 99; }
shift 2
[ "${1:-}" = -- ] && shift
exec BINARY "$@"
"""


def quick_start():
    return dict(MARK.findall((ROOT / "README.md").read_text()))


class QuickStart(unittest.TestCase):
    def setUp(self):
        self.blocks = quick_start()
        self.work = pathlib.Path(tempfile.mkdtemp(prefix="kuzzle-rt-readme-"))
        self.addCleanup(subprocess.run, ["rm", "-rf", str(self.work)])
        (self.work / "bin").mkdir()
        cargo = self.work / "bin" / "cargo"
        cargo.write_text(CARGO.replace("BINARY", BINARY))
        cargo.chmod(0o755)
        # A newcomer's environment: no kuzzle_* variable (the node would read it), no RUST_LOG.
        self.env = {k: v for k, v in os.environ.items()
                    if not k.lower().startswith("kuzzle_") and k != "RUST_LOG"}
        self.env.update(HOME=str(self.work), PATH=f"{self.work / 'bin'}:{os.environ['PATH']}")

    def start(self, command, ready, env=None, cwd=None):
        """Runs a block in a process group of its own until its output holds `ready`."""
        process = subprocess.Popen(["bash", "-c", command], cwd=cwd or self.work, env=env or self.env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
        self.addCleanup(lambda: process.poll() is None and os.killpg(process.pid, signal.SIGKILL))
        output = ""
        deadline = time.monotonic() + 120
        while ready not in output:
            line = process.stdout.readline()
            self.assertTrue(line and time.monotonic() < deadline, f"{command!r} not ready:\n{output}")
            output += line
        return process, output

    def stop(self, process):
        os.killpg(process.pid, signal.SIGINT)
        rest, _ = process.communicate(timeout=120)
        self.assertEqual(process.returncode, 0, rest)
        return rest

    def request(self, name, port):
        block = self.blocks[name].replace("localhost:7512", f"127.0.0.1:{port}")
        self.assertNotIn("7512", block)
        done = subprocess.run(["bash", "-c", block], env=self.env, capture_output=True, text=True,
                              timeout=30)
        self.assertEqual(done.returncode, 0, done.stderr)
        return json.loads(done.stdout)

    def test_the_blocks_are_marked(self):
        self.assertEqual(sorted(self.blocks),
                         ["cluster", "cluster-request", "first-admin", "node", "request"])
        self.assertIn("cargo run --release", self.blocks["node"])
        self.assertIn("cluster/run --nodes 3", self.blocks["cluster"])

    def test_one_node_starts_quietly_answers_and_is_silent_once_it_has_an_administrator(self):
        (port,) = free_ports(1)
        env = dict(self.env, kuzzle_server__port=str(port), kuzzle_server__host="127.0.0.1")
        process, output = self.start(self.blocks["node"], "listening on", env=env)
        answer = self.request("request", port)
        self.assertEqual(answer["status"], 200, answer)
        self.assertIsInstance(answer["result"]["now"], int)
        created = self.request("first-admin", port)
        self.assertEqual((created["status"], created["result"]["_id"]), (200, "admin"), created)
        rest = self.stop(process)
        warnings = [line for line in (output + rest).splitlines() if " WARN " in line]
        self.assertEqual(len(warnings), 1, output + rest)
        self.assertIn("no administrator yet", warnings[0])
        self.assertTrue((self.work / "data" / "kuzzle-rt.redb").is_file(), "the store in ./data")
        # The same command again, on the same ./data: not one warning.
        process, output = self.start(self.blocks["node"], "listening on", env=env)
        rest = self.stop(process)
        self.assertNotIn(" WARN ", output + rest)

    def test_a_three_node_cluster_answers_through_nginx(self):
        port, first_node_port = free_ports(4)[:2]
        command = re.sub(r"^(cluster/run[^#\n]*?)\s*(#.*)?$",
                         rf"\1 --port {port} --first-node-port {first_node_port} --clean",
                         self.blocks["cluster"].strip(), flags=re.M)
        process, output = self.start(command, "cluster ready on", cwd=ROOT,
                                     env=dict(self.env, KUZZLE_RT_BIN=BINARY))
        self.assertEqual(output.count("\nnode knode-"), 3, output)
        status = self.request("cluster-request", port)
        self.assertEqual(status["result"]["activeNodes"], 3, status)
        self.assertEqual(len(status["result"]["nodes"]), 3, status)
        self.stop(process)


if __name__ == "__main__":
    unittest.main()
