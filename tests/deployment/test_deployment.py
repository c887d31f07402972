"""The deployment files: docker-compose.yml, cluster/Dockerfile, the nginx configurations,
and how cluster/run stops.

The Docker engine is not available where the tests run, so docker-compose.yml is parsed
and checked against what the cluster needs, and the nginx configuration that cluster/run
generates is checked by nginx itself (`nginx -t`).
"""

import json
import os
import pathlib
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


class Compose(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        cls.services = cls.compose["services"]

    def default_services(self):
        return {name for name, service in self.services.items() if "profiles" not in service}

    def test_services(self):
        self.assertEqual(self.default_services(), {"redis", "node", "nginx"})

    def test_redis_cluster_profile(self):
        profile = {
            name: service
            for name, service in self.services.items()
            if "redis-cluster" in service.get("profiles", [])
        }
        members = {f"redis-c{i}" for i in range(1, 7)}
        self.assertEqual(set(profile), members | {"redis-cluster-create", "node-rc", "nginx-rc"})
        for name in members:
            command = profile[name]["command"]
            self.assertEqual(command[command.index("--cluster-enabled") + 1], "yes")
            self.assertEqual(command[command.index("--cluster-announce-hostname") + 1], name)
            self.assertIn("redis-cli", " ".join(profile[name]["healthcheck"]["test"]))
        create = profile["redis-cluster-create"]
        self.assertEqual(set(create["depends_on"]), members)
        script = create["command"][0]
        self.assertIn("--cluster-replicas 1", script)
        for name in members:
            self.assertIn(name, script)
        node = profile["node-rc"]
        self.assertEqual(
            node["depends_on"]["redis-cluster-create"]["condition"], "service_completed_successfully"
        )
        seeds = node["environment"]["kuzzle_services__storage__nodes"]
        self.assertTrue(seeds.startswith("*json:"))
        for seed in json.loads(seeds[len("*json:"):]):
            self.assertIn(seed["host"], members)
        # On its own network `node` names these nodes, so that nginx.conf serves both.
        self.assertIn("node", node["networks"]["rc"]["aliases"])
        self.assertEqual(profile["nginx-rc"]["networks"], ["rc"])
        self.assertEqual(profile["nginx-rc"]["ports"], ["7513:7512"])
        # The default services stay on the default network.
        for name in self.default_services():
            self.assertNotIn("networks", self.services[name])

    def test_redis_persists_and_is_checked(self):
        redis = self.services["redis"]
        self.assertIn("--appendonly", redis["command"])
        self.assertEqual(redis["command"][redis["command"].index("--appendonly") + 1], "yes")
        self.assertIn("redis-cli", " ".join(redis["healthcheck"]["test"]))

    def test_nodes_scale(self):
        node = self.services["node"]
        build = node["build"]
        self.assertTrue((ROOT / build["context"] / build["dockerfile"]).is_file())
        # `--scale node=N`: no fixed name, no published port.
        self.assertNotIn("container_name", node)
        self.assertNotIn("ports", node)
        self.assertEqual(node["deploy"]["replicas"], 3)
        env = node["environment"]
        self.assertEqual(env["kuzzle_services__storage__backend"], "redis")
        self.assertEqual(env["kuzzle_services__storage__node__host"], "redis")
        self.assertEqual(node["depends_on"]["redis"]["condition"], "service_healthy")

    def test_nginx_in_front(self):
        nginx = self.services["nginx"]
        self.assertEqual(nginx["ports"], ["7512:7512"])
        source = nginx["volumes"][0].split(":")[0]
        self.assertTrue((ROOT / source).is_file(), source)
        self.assertEqual(nginx["depends_on"]["node"]["condition"], "service_healthy")


class Dockerfile(unittest.TestCase):
    def setUp(self):
        self.text = (ROOT / "cluster" / "Dockerfile").read_text()

    def test_multi_stage_non_root_with_health_check(self):
        self.assertEqual(len(re.findall(r"^FROM ", self.text, re.M)), 2)
        self.assertRegex(self.text, r"(?m)^USER kuzzle$")
        self.assertRegex(self.text, r"(?ms)^HEALTHCHECK .*?/_ready")

    def test_copied_paths_exist(self):
        for line in re.findall(r"(?m)^COPY (?!--from)(.+)$", self.text):
            for source in line.split()[:-1]:
                self.assertTrue((ROOT / source).exists(), source)


class Nginx(unittest.TestCase):
    def test_docker_configuration_proxies_websockets(self):
        text = (ROOT / "cluster" / "nginx.conf").read_text()
        for directive in (
            "proxy_set_header Upgrade $http_upgrade;",
            "proxy_set_header Connection $connection_upgrade;",
            "proxy_read_timeout 1h;",
            "server node:7512 resolve",
            "listen 7512;",
        ):
            self.assertIn(directive, text)

    @unittest.skipUnless(shutil.which("nginx"), "nginx is not installed")
    def test_local_configuration_is_valid_nginx(self):
        template = (ROOT / "cluster" / "nginx-local.conf.in").read_text()
        with tempfile.TemporaryDirectory() as work:
            (pathlib.Path(work) / "temp").mkdir()
            conf = pathlib.Path(work) / "nginx.conf"
            conf.write_text(
                template.replace("#UPSTREAMS#", "    server 127.0.0.1:1;").replace("#PORT#", "1")
            )
            result = subprocess.run(
                ["nginx", "-t", "-p", work, "-c", str(conf), "-g", f"pid {work}/nginx.pid;"],
                capture_output=True,
                text=True,
            )
            self.assertEqual(result.returncode, 0, result.stderr)


if __name__ == "__main__":
    unittest.main()


def free_ports(count):
    """`count` consecutive free ports on 127.0.0.1, below Linux's ephemeral range (a port
    there may be taken as an outgoing connection's source before the process binds it)."""
    for _ in range(200):
        base = random.randrange(25000, 32768 - count)
        try:
            sockets = []
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return list(range(base, base + count))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free ports")


class ClusterRun(unittest.TestCase):
    """cluster/run stops on SIGINT to its process group and exits 0, however it was started,
    and keeps its logs (issue 22)."""

    def start(self, ignore_sigint):
        # A script's background job starts with SIGINT ignored (no trap can catch it then):
        # `trap "" INT` before exec reproduces it.
        prefix = 'trap "" INT; ' if ignore_sigint else ""
        port, first_node_port, _ = free_ports(3)
        command = (f"{prefix}exec cluster/run --nodes 2 --port {port} "
                   f"--first-node-port {first_node_port} --heartbeat 500")
        binary = os.environ.get("KUZZLE_RT_BIN", str(ROOT / "target/debug/kuzzle-rt"))
        process = subprocess.Popen(
            ["bash", "-c", command], cwd=ROOT, env=dict(os.environ, KUZZLE_RT_BIN=binary),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.addCleanup(lambda: process.poll() is None and os.killpg(process.pid, signal.SIGKILL))
        output = ""
        deadline = time.monotonic() + 120
        while "cluster ready on" not in output:
            line = process.stdout.readline()
            self.assertTrue(line and time.monotonic() < deadline, f"not ready:\n{output}")
            output += line
        logs = pathlib.Path(re.search(r"logs in (\S+)", output).group(1))
        self.addCleanup(shutil.rmtree, logs, True)
        return process, logs

    def stop_with_sigint_to_the_group(self, ignore_sigint):
        process, logs = self.start(ignore_sigint)
        os.killpg(process.pid, signal.SIGINT)
        rest, _ = process.communicate(timeout=120)
        self.assertEqual(process.returncode, 0, rest)
        self.assertIn(f"logs kept in {logs}", rest)
        for name in ["node0", "node1", "nginx"]:
            self.assertTrue((logs / name).exists(), f"{name} in {sorted(os.listdir(logs))}")
        self.assertIn("listening on", (logs / "node0" / "log").read_text())

    def test_sigint_to_the_group_when_started_from_a_terminal(self):
        self.stop_with_sigint_to_the_group(ignore_sigint=False)

    def test_sigint_to_the_group_when_started_in_a_scripts_background(self):
        self.stop_with_sigint_to_the_group(ignore_sigint=True)
