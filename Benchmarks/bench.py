#!/usr/bin/env python3
"""make bench / make bench-quick: how fast vxlan-agent brings a node in sync,
next to iproute2 (flannel's layout and nexthop objects) and the kernel's own
limit (Benchmarks/limit.c), all in one run on the same machine.

  bench.py AGENT quick|full|smoke|sync|daemon|datapath|ipv6 [--runs R] [--seconds S] [--out DIR]

smoke: `sync` at 100 peers only (seconds; the end-to-end tests run it).
sync: only the `sync` scenarios at 1,000 and 10,000 peers (quick's first part,
  about a minute), and issue 10's two `sync` targets.
ipv6: only issue 12's IPv6 cold sync at 10,000 peers (dual stack: IPv4 and IPv6
  halves), against `bridge -batch` + `ip -6 -batch` in flannel's layout (and the
  nexthop layout, and both planes in flannel's layout) in the same run; namespaces
  with 198.18.0.1/24 and 2001:2::1/64 on eth0. quick and full measure it too,
  after the `sync` scenarios.
daemon: only issue 10's daemon targets, `vxlan-agent run` against a real etcd:
  propagation p50/p99 at 0 and 10,000 peers, bursts of 5,000 (100-key
  transactions) and 20,000 (128-key), repair of a deleted route, neighbor and
  FDB entry at 10,000 peers, join at 10,000 against its floor, VmHWM/VmRSS at
  50,000 peers. quick and full measure them too, after the `sync` scenarios.
datapath: only the datapath table (issue 11): pod-to-pod iperf3 between two hosts
  of one segment over plain underlay routes, host-gw, VXLAN and VXLAN with
  DirectRouting (the last is the host-gw path on one segment); R rounds (default
  5) of S seconds (default 5), medians of throughput, TCP retransmits and CPU-s
  per Gbit. A backend this build's `vxlan-agent sync` refuses, or does not program
  as the case says, is reported "not available in this build", not imitated.
  quick and full measure it too, at the end.
At the end: a table of issue 10's targets (value, baseline from the same run,
ratio, pass/fail), also written into the results JSON as "summary".

Every scenario runs in a fresh network namespace named vxa-bench-<pid>-*,
with a veth pair as underlay (198.18.0.1/24 on eth0); everything is removed at
the end, also on failure. Figures are whole processes (start, config parse,
validation, dump, diff, apply): median, min and max of R runs.
"""
import atexit
import base64
import datetime
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PREFIX = f"vxa-bench-{os.getpid()}"
created = []
spawned = []  # helper processes (listeners, clients, monitors) killed on the way out


def sh(cmd, check=True, capture=True):
    result = subprocess.run(cmd, shell=True, text=True, capture_output=capture)
    if check and result.returncode != 0:
        raise RuntimeError(f"`{cmd}` exited {result.returncode}: {result.stdout}{result.stderr}")
    return result


def timed(argv):
    """Runs argv, returns (seconds, max RSS in KiB, exit status, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    elapsed = time.perf_counter() - start
    # wait4 already reaped it via communicate; RUSAGE_CHILDREN is cumulative max,
    # so read this child's max RSS from /usr/bin/time-free accounting below.
    return elapsed, out, err, proc.returncode


def rss_of(argv):
    """Peak RSS (KiB) of one run, through wait4."""
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.execvp(argv[0], argv)
    _, status, usage = os.wait4(pid, 0)
    return usage.ru_maxrss


def netns(name, dual=False):
    """A namespace with eth0 198.18.0.1/24 as underlay; IPv6 off, or with dual (the
    IPv6 scenario) on without DAD or router advertisements and eth0 also 2001:2::1/64."""
    full = f"{PREFIX}-{name}"
    sh(f"ip netns add {full}")
    created.append(full)
    if dual:
        sh(f"ip netns exec {full} sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 "
           f"net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0")
    else:
        sh(f"ip netns exec {full} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
    sh(f"ip -n {full} link set lo up")
    sh(f"ip -n {full} link add eth0 type veth peer name eth1")
    sh(f"ip -n {full} addr add 198.18.0.1/24 dev eth0")
    if dual:
        sh(f"ip -n {full} addr add 2001:2::1/64 dev eth0 nodad")
    sh(f"ip -n {full} link set eth0 up")
    sh(f"ip -n {full} link set eth1 up")
    return full


def drop(ns, agent=None, config=None):
    """Deletes a namespace; routes and nexthops go first (a device that 50,000
    nexthops still use takes the kernel tens of seconds to delete)."""
    if ns not in created:
        return
    sh(f"ip -n {ns} route flush proto 152", check=False)
    sh(f"ip -n {ns} -6 route flush proto 152", check=False)
    sh(f"ip -n {ns} nexthop flush proto 152", check=False)
    sh(f"ip -n {ns} link del flannel.1", check=False)
    sh(f"ip -n {ns} link del flannel-v6.1", check=False)
    sh(f"ip netns del {ns}", check=False)
    created.remove(ns)


def cleanup_all():
    for proc in spawned:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for ns in list(created):
        drop(ns)
    for line in sh("ip netns list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            sh(f"ip netns del {name}", check=False)


atexit.register(cleanup_all)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
signal.signal(signal.SIGINT, lambda *_: sys.exit(130))


def stats(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


class Bench:
    def __init__(self, agent, runs, work, logs=None):
        self.agent = os.path.abspath(agent)
        self.runs = runs
        self.work = work
        self.logs = logs  # where the daemons' and etcd's logs are kept (they explain an outlier)
        self.limit = os.path.join(HERE, "bin", "limit")
        self.results = {}
        self.floors = {}
        self.probe = 60000  # the propagation samples' leases: 60001 (10.234.97.0/24) on, no peer's

    def inventory(self, n, churn=0.0, seed=1, dual=False):
        path = os.path.join(self.work, f"inv-{n}-{churn}-{seed}{'-dual' if dual else ''}.json")
        if not os.path.exists(path):
            sh(f"python3 {HERE}/gen.py inventory {n} --churn {churn} --seed {seed}{' --dual' if dual else ''} > {path}")
        return path

    def agent_cmd(self, ns, verb, config, *extra):
        # Text output, as cron runs it: sync prints one summary line, diff one line per change.
        return ["ip", "netns", "exec", ns, self.agent, verb, "--config", config,
                "--lock-file", os.path.join(self.work, f"{ns}.lock"), *extra]

    def agent_run(self, ns, verb, config, *extra):
        seconds, out, err, status = timed(self.agent_cmd(ns, verb, config, *extra))
        if status not in (0, 2):
            raise RuntimeError(f"agent {verb} exited {status}: {err}")
        summary = out.strip().splitlines()[-1] if out.strip() else ""
        writes = re.search(r"(\d+) kernel writes?", summary)
        counts = re.search(r"(\d+) to add, (\d+) to change, (\d+) to remove", summary)
        doc = {"summary": {"add": int(counts[1]), "change": int(counts[2]), "remove": int(counts[3])}} if counts else {}
        return seconds, int(writes[1]) if writes else 0, doc

    def record(self, n, name, values, **extra):
        self.results.setdefault(str(n), {})[name] = {**stats(values), **extra}
        print(f"  {name:<28} median {statistics.median(values):8.3f} s  (min {min(values):.3f}, max {max(values):.3f})"
              + "".join(f"  {k} {v}" for k, v in extra.items()), flush=True)

    def scenario_agent(self, n):
        base = self.inventory(n)
        churned = self.inventory(n, churn=1.0)
        drift = self.inventory(n, churn=0.25, seed=2)
        cold, writes = [], 0
        for r in range(self.runs):
            ns = netns(f"a{n}-{r}")
            seconds, writes, _ = self.agent_run(ns, "sync", base)
            cold.append(seconds)
            if r < self.runs - 1:
                drop(ns)
        self.record(n, "agent cold", cold, writes=writes)
        rss = rss_of(self.agent_cmd(ns, "sync", base))  # a no-op at N: the dump and diff resident
        noop, noop_writes = [], 0
        for _ in range(self.runs):
            seconds, w, _ = self.agent_run(ns, "sync", base)
            noop.append(seconds)
            noop_writes = max(noop_writes, w)
        self.record(n, "agent no-op", noop, writes=noop_writes)
        # Issue 10's no-op baseline: what iproute2 reads to see the same state.
        dumps = []
        for _ in range(self.runs):
            seconds, _, err, status = timed(["ip", "netns", "exec", ns, "sh", "-c",
                                             "bridge fdb show dev flannel.1 > /dev/null && "
                                             "ip neigh show dev flannel.1 > /dev/null && ip route show > /dev/null"])
            if status != 0:
                raise RuntimeError(f"iproute2 dumps: {err}")
            dumps.append(seconds)
        self.record(n, "iproute2 three dumps", dumps)
        churn, churn_writes = [], 0
        for _ in range(self.runs):
            self.agent_run(ns, "sync", base)
            seconds, churn_writes, _ = self.agent_run(ns, "sync", churned)
            churn.append(seconds)
        self.record(n, "agent churn 4x1%", churn, writes=churn_writes)
        self.agent_run(ns, "sync", base)
        dry = []
        for _ in range(self.runs):
            seconds, _, doc = self.agent_run(ns, "diff", drift)
            dry.append(seconds)
        pending = doc.get("summary", {})
        self.record(n, "agent dry-run 1% drift", dry, pending=pending.get("add", 0) + pending.get("change", 0) + pending.get("remove", 0))
        cold_rss = 0
        for r in range(1):
            ns2 = netns(f"r{n}")
            cold_rss = rss_of(self.agent_cmd(ns2, "sync", base))
            drop(ns2)
        self.results[str(n)]["agent peak RSS KiB"] = {"cold": cold_rss, "noop": rss}
        print(f"  agent peak RSS               cold {cold_rss / 1024:.1f} MiB, no-op {rss / 1024:.1f} MiB", flush=True)
        drop(ns)

    def scenario_limit(self, n):
        cold, internal = [], []
        for r in range(self.runs):
            ns = netns(f"c{n}-{r}")
            seconds, out, err, status = timed(["ip", "netns", "exec", ns, self.limit, "apply", str(n)])
            if status != 0:
                raise RuntimeError(f"limit apply: {out}{err}")
            cold.append(seconds)
            internal.append(json.loads(out)["seconds"])
            if r < self.runs - 1:
                drop(ns)
        self.record(n, "C limit cold", cold, messages=json.loads(out)["messages"])
        dumps = []
        for _ in range(self.runs):
            seconds, out, _, _ = timed(["ip", "netns", "exec", ns, self.limit, "dump"])
            dumps.append(seconds)
        self.record(n, "C limit dump", dumps)
        drop(ns)

    def scenario_iproute2(self, n, layout):
        batches = os.path.join(self.work, f"ip-{n}-{layout}")
        os.makedirs(batches, exist_ok=True)
        sh(f"python3 {HERE}/gen.py iproute2 {n} {layout} {batches}")
        runs = []
        for r in range(self.runs if n <= 10000 else 3):
            ns = netns(f"i{n}-{layout}-{r}")
            script = (f"ip link add flannel.1 mtu 1450 address 0e:01:c6:12:00:01 type vxlan id 1 local 198.18.0.1 dev eth0 "
                      f"dstport 8472 nolearning && ip addr add 10.0.0.0/32 dev flannel.1 && ip link set flannel.1 up && "
                      f"bridge -batch {batches}/bridge.batch && ip -batch {batches}/ip.batch")
            seconds, out, err, status = timed(["ip", "netns", "exec", ns, "sh", "-c", script])
            if status != 0:
                raise RuntimeError(f"iproute2 {layout}: {err}")
            runs.append(seconds)
            drop(ns)
        self.record(n, f"iproute2 {layout} layout", runs)

    # ---- dual stack: the IPv6 plane's cold sync (issue 12) ----

    V6_DEVICE = ("ip link add flannel-v6.1 mtu 1430 address 0a:01:00:00:00:01 type vxlan id 1 local 2001:2::1 dev eth0 "
                 "dstport 8472 nolearning && ip -6 addr add fd00:10::/128 dev flannel-v6.1 nodad && "
                 "ip link set flannel-v6.1 up")
    V4_DEVICE = ("ip link add flannel.1 mtu 1450 address 0e:01:c6:12:00:01 type vxlan id 1 local 198.18.0.1 dev eth0 "
                 "dstport 8472 nolearning && ip addr add 10.0.0.0/32 dev flannel.1 && ip link set flannel.1 up")

    def dual_sync(self, ns, config, n):
        """`sync --timings` of a dual-stack inventory: (seconds, kernel writes, {phase: seconds}).
        Fails unless both planes hold all n peers (none skipped or left out)."""
        seconds, out, err, status = timed(self.agent_cmd(ns, "sync", config, "--timings"))
        if status != 0:
            raise RuntimeError(f"agent sync (dual stack) exited {status}: {out}{err}")
        summary = out.strip().splitlines()[-1] if out.strip() else ""
        if f"({n} peers; IPv6: {n} peers;" not in summary and f"({n} peers; IPv6: {n} peers)" not in summary:
            raise RuntimeError(f"agent sync (dual stack) did not program {n} peers in both planes: {summary}")
        writes = re.search(r"(\d+) kernel writes?", summary)
        line = next((l for l in err.splitlines() if l.startswith("timings: ")), "")
        phases = {name: float(ms) / 1000 for name, ms in re.findall(r"(?:^|, )([a-z0-9]+) ([\d.]+) ms", line[9:])}
        return seconds, int(writes[1]) if writes else 0, phases

    @staticmethod
    def check_routes6(ns, n, what):
        """The IPv6 plane is there: n routes of protocol 152 on flannel-v6.1."""
        routes6 = int(sh(f"ip -n {ns} -6 route show dev flannel-v6.1 proto 152 | wc -l").stdout.strip())
        if routes6 != n:
            raise RuntimeError(f"{what}: {routes6} IPv6 routes of proto 152 on flannel-v6.1, expected {n}")

    def record_phases(self, key, name, phases, writes_are):
        """Medians of `sync --timings` phases into the row `name`, and one line: the IPv4 plane's dump
        (snapshot) and diff, the IPv6 plane's dump (snapshot6) and plan (plan6), the writes of both
        planes (apply + apply6: sync times each plane's writes apart), and the whole process as the
        agent saw it (total)."""
        keys = ("nodes", "snapshot", "diff", "snapshot6", "plan6", "apply", "apply6", "total")
        share = {k: statistics.median(p.get(k, 0.0) for p in phases) for k in keys}
        share["apply"] += share.pop("apply6")
        self.results[key][name]["timings_median_s"] = share
        print(f"  {'':<28} sync --timings medians: inventory {share['nodes'] * 1000:.0f} ms, IPv4 dump "
              f"{share['snapshot'] * 1000:.0f} + diff {share['diff'] * 1000:.0f} ms, IPv6 dump "
              f"{share['snapshot6'] * 1000:.0f} + plan {share['plan6'] * 1000:.0f} ms, apply ({writes_are} writes) "
              f"{share['apply'] * 1000:.0f} ms, total {share['total'] * 1000:.0f} ms", flush=True)

    def scenario_ipv6(self, n):
        """Issue 12: the IPv6 plane's cold sync at n peers, against iproute2 in flannel's layout.
        A dual-stack inventory (gen.py --dual: n peers, each with an IPv4 and an IPv6 half), in
        fresh namespaces whose eth0 has 198.18.0.1/24 and 2001:2::1/64:
        - agent dual cold: one `sync` from an empty namespace, both planes (whole process);
        - agent IPv6 cold: the IPv4 plane synced first (untimed, the IPv4-only inventory of the same
          peers), then the dual `sync`: every write is the IPv6 plane's, the IPv4 plane a no-op
          (a dual-stack sync cannot leave its IPv4 plane out);
        - agent dual no-op: the dual `sync` again (0 writes expected);
        - iproute2 IPv6: device flannel-v6.1, `bridge -batch` (fdb) + `ip -6 -batch` (neigh,
          route per peer via its VTEP address, onlink: flanneld's vxlan v6) from an empty namespace,
          flannel's layout and the nexthop layout;
        - iproute2 dual, flannel's layout: both devices and both planes' batches, one script."""
        dual = self.inventory(n, dual=True)
        v4 = self.inventory(n)
        key = f"{n} IPv6"
        batches = os.path.join(self.work, f"ip6-{n}")
        os.makedirs(batches, exist_ok=True)
        for layout in ("classic", "nexthop"):
            os.makedirs(f"{batches}/{layout}", exist_ok=True)
            sh(f"python3 {HERE}/gen.py iproute2 {n} {layout} {batches}/{layout}")
            sh(f"python3 {HERE}/gen.py iproute2v6 {n} {layout} {batches}/{layout}")

        cold, writes, phases = [], 0, []
        for r in range(self.runs):
            ns = netns(f"6d{n}-{r}", dual=True)
            seconds, writes, p = self.dual_sync(ns, dual, n)
            cold.append(seconds)
            phases.append(p)
            self.check_routes6(ns, n, "agent dual cold")
            drop(ns)
        self.record(key, "agent dual cold", cold, writes=writes)
        self.record_phases(key, "agent dual cold", phases, "both planes'")

        cold6, writes6, phases = [], 0, []
        for r in range(self.runs):
            ns = netns(f"6v{n}-{r}", dual=True)
            self.agent_run(ns, "sync", v4)
            seconds, writes6, p = self.dual_sync(ns, dual, n)
            cold6.append(seconds)
            phases.append(p)
            self.check_routes6(ns, n, "agent IPv6 cold")
            if r < self.runs - 1:
                drop(ns)
        self.record(key, "agent IPv6 cold", cold6, writes=writes6)
        self.record_phases(key, "agent IPv6 cold", phases, "the IPv6 plane's")
        noop, noop_writes, phases = [], 0, []
        for _ in range(self.runs):
            seconds, w, p = self.dual_sync(ns, dual, n)
            noop.append(seconds)
            phases.append(p)
            noop_writes = max(noop_writes, w)
        self.record(key, "agent dual no-op", noop, writes=noop_writes)
        self.record_phases(key, "agent dual no-op", phases, "no")
        drop(ns)

        cases = [("iproute2 IPv6 classic layout", "classic", self.V6_DEVICE + " && bridge -batch {d}/bridge6.batch && "
                  "ip -6 -batch {d}/ip6.batch"),
                 ("iproute2 IPv6 nexthop layout", "nexthop", self.V6_DEVICE + " && bridge -batch {d}/bridge6.batch && "
                  "ip -6 -batch {d}/ip6.batch"),
                 ("iproute2 dual classic layout", "classic", self.V4_DEVICE + " && " + self.V6_DEVICE +
                  " && bridge -batch {d}/bridge.batch && ip -batch {d}/ip.batch && bridge -batch {d}/bridge6.batch && "
                  "ip -6 -batch {d}/ip6.batch")]
        for name, layout, script in cases:
            runs = []
            for r in range(self.runs):
                ns = netns(f"6i{n}-{layout}-{r}", dual=True)
                seconds, out, err, status = timed(["ip", "netns", "exec", ns, "sh", "-c",
                                                   script.format(d=f"{batches}/{layout}")])
                if status != 0:
                    raise RuntimeError(f"{name}: {err}")
                self.check_routes6(ns, n, name)
                runs.append(seconds)
                drop(ns)
            self.record(key, name, runs)

    # ---- the datapath: pod-to-pod iperf3 over each way of reaching a peer (issue 11) ----

    DATAPATH_CASES = (
        # name, cluster.sh inventory arguments (None: no agent, hand routes), the path a pod's packets take
        ("plain", None, "underlay routes by hand (ip route <peer subnet> via <peer>), no agent"),
        ("host-gw", ["--backend", "host-gw"], "vxlan-agent host-gw: a route via the peer's public IP"),
        ("vxlan", [], "vxlan-agent VXLAN: flannel.1"),
        ("vxlan+DirectRouting", ["--direct-routing"],
         "vxlan-agent VXLAN with DirectRouting: on one segment every peer is direct, so this is the host-gw path"),
        ("udp", ["--backend", "udp"], "vxlan-agent udp: flannel0, the data path in user space (`vxlan-agent run` on both hosts)"),
        ("udp, flanneld's design", "proxy",
         "Benchmarks/flannel_proxy.c: a UDP tunnel built as flanneld's udp backend moves packets (one thread, one read and "
         "one sendto per packet, no offloads); flanneld itself is not on this machine"),
    )

    def datapath(self, runs=5, seconds=5):
        """Pod-to-pod iperf3 (one TCP stream, `seconds` each) between two hosts of one segment
        (Tests/cluster/cluster.sh, one pod per host), over each case of DATAPATH_CASES. Rounds
        interleave the cases (each round runs every case once), so load from other work on the
        machine falls on all of them alike; figures are medians of `runs` runs.
        A case whose configuration `vxlan-agent sync` refuses, or which does not put the server
        pod's subnet on the expected path (checked with `ip route get` on both hosts), is
        "not available in this build" with the reason; it is never imitated by hand routes.
        CPU: the CPU time of the two iperf3 processes (wait4 rusage: user + system; this
        kernel's tick accounting charges softirq work done in a process's context, the veth,
        bridge and VXLAN transmit and receive paths, to that process) plus the ksoftirqd
        threads' CPU time during the run (the softirq work done outside a process), divided
        by the gigabits received: CPU-seconds per Gbit, which is also CPU cores per Gbit/s.
        The whole machine's busy time (/proc/stat) during the run, and in the 1 s before it
        (other work), are kept in the JSON for context: on a shared machine they mostly
        measure the other work."""
        cluster = os.path.join(ROOT, "Tests", "cluster", "cluster.sh")
        prefix = f"{PREFIX}-dp"
        h1, h2 = f"{prefix}-h1", f"{prefix}-h2"
        created.append(prefix + "-cluster")
        d = {"setup": "two hosts of one segment (198.18.0.1, 198.18.0.2 on a bridge), one CNI bridge pod each, "
                      f"iperf3 one TCP stream pod 10.244.1.x -> pod 10.244.2.x, {seconds} s per run, medians of {runs}",
             "cpu_per_gbit_is": "CPU-seconds per Gbit received (= cores per Gbit/s): both iperf3 processes' user+system "
                                "(softirq in their context included) + ksoftirqd threads, during the run",
             "seconds": seconds, "runs": runs, "cases": {}}
        self.results["datapath"] = d
        try:
            sh(f"bash {cluster} up {prefix} 2 1")
            pods = [line.split() for line in sh(f"bash {cluster} pods {prefix}").stdout.splitlines()]
            client, server = pods[0], pods[1]
            cases = []
            for name, args, what in self.DATAPATH_CASES:
                row = d["cases"][name] = {"path": what}
                if args is None or args == "proxy":
                    cases.append((name, args))
                    continue
                configs = self.datapath_configs(cluster, name, args)
                with open(configs[1]) as f:
                    row["inventory_backend"] = json.load(f)["network"]["Backend"]
                # The agent's own verdict on the configuration, before anything is written.
                probe = subprocess.run(self.datapath_agent(h1, "sync", configs[1], 1, "--dry-run"),
                                       capture_output=True, text=True)
                if probe.returncode not in (0, 2):
                    # (the temp dir's path left out: it is gone when the table is read)
                    reason = (probe.stderr.strip() or probe.stdout.strip()).replace(self.work + "/", "").splitlines()
                    row["available"] = False
                    row["reason"] = "`vxlan-agent sync` refuses the configuration: " + (reason[-1] if reason else f"exit {probe.returncode}")
                    continue
                cases.append((name, configs))
            for r in range(runs):
                for name, configs in cases:
                    row = d["cases"][name]
                    if row.get("available") is False:
                        continue
                    self.datapath_setup(prefix, name, configs, client, server, row)
                    try:
                        if row.get("available") is False:
                            continue
                        row["available"] = True
                        row.setdefault("samples", []).append(self.datapath_run(prefix, client, server, seconds,
                                                                               [p.pid for p in self.dp_procs]))
                        s = row["samples"][-1]
                        print(f"  round {r + 1}/{runs} {name:<20} {s['bps'] / 1e9:6.2f} Gbit/s, {s['retransmits']} retransmits, "
                              f"{s['cpu_per_gbit']:.3f} CPU-s/Gbit", flush=True)
                    finally:
                        self.datapath_teardown(prefix, name, configs, row)
            for name, row in d["cases"].items():
                samples = row.get("samples")
                if not samples:
                    continue
                row["gbps"] = stats([s["bps"] / 1e9 for s in samples])
                row["retransmits"] = stats([s["retransmits"] for s in samples])
                row["cpu_per_gbit"] = stats([s["cpu_per_gbit"] for s in samples])
                row["fragments"] = sum(s["fragments"] for s in samples)
            plain = d["cases"]["plain"].get("gbps", {}).get("median")
            for row in d["cases"].values():
                if plain and "gbps" in row:
                    row["vs_plain"] = row["gbps"]["median"] / plain
        finally:
            sh(f"bash {cluster} down {prefix}", check=False)
            created.remove(prefix + "-cluster")

    def datapath_configs(self, cluster, name, args):
        """One agent configuration per host: cluster.sh's inventory with the case's backend, and
        the daemon's files pointed into the bench's temp dir (so `cleanup` never touches
        /run/flannel or /etc/cni on this machine), masquerade off (plain has none either)."""
        inventory = json.loads(sh(f"bash {cluster} inventory 2 {' '.join(args)}").stdout)
        paths = {}
        for i in (1, 2):
            config = dict(inventory, subnetFile=os.path.join(self.work, f"dp-{name}-h{i}-subnet.env"),
                          cniConfFile="", ipMasq=False)
            paths[i] = os.path.join(self.work, f"dp-{name}-h{i}.json")
            with open(paths[i], "w") as f:
                json.dump(config, f, indent=2)
        return paths

    def datapath_agent(self, ns, verb, config, i, *extra):
        return ["ip", "netns", "exec", ns, self.agent, verb, "--config", config, "--node", f"node-{i}",
                "--lock-file", os.path.join(self.work, f"dp-h{i}.lock"), *extra]

    dp_procs = []

    def datapath_start(self, argv, log, ready, what, timeout=20):
        """Starts a process of the case (a daemon, a proxy) and waits until `ready()` holds."""
        out = open(log, "w")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        spawned.append(proc)
        self.dp_procs.append(proc)
        deadline = time.time() + timeout
        while not ready():
            if proc.poll() is not None or time.time() > deadline:
                with open(log) as f:
                    raise RuntimeError(f"{what} did not start: {f.read()[-2000:]}")
            time.sleep(0.05)

    def datapath_stop(self):
        for proc in self.dp_procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            spawned.remove(proc)
        self.dp_procs = []

    def datapath_setup(self, prefix, name, configs, client, server, row):
        """Programs the case on both hosts, then checks each host's route to the other's pod."""
        hosts = {1: f"{prefix}-h1", 2: f"{prefix}-h2"}
        if configs is None:
            sh(f"ip -n {hosts[1]} route add 10.244.2.0/24 via 198.18.0.2 dev eth0")
            sh(f"ip -n {hosts[2]} route add 10.244.1.0/24 via 198.18.0.1 dev eth0")
        elif configs == "proxy":
            for i, ns in hosts.items():
                self.datapath_start(["ip", "netns", "exec", ns, os.path.join(HERE, "bin", "flannel_proxy"), "flannel0",
                                     f"198.18.0.{i}", "8285", f"10.244.{3 - i}.0/24", f"198.18.0.{3 - i}"],
                                    os.path.join(self.work, f"dp-proxy-h{i}.log"),
                                    lambda ns=ns: sh(f"ip -n {ns} link show flannel0", check=False).returncode == 0,
                                    f"flannel_proxy on host {i}")
                sh(f"ip -n {ns} addr add 10.244.{i}.0/32 dev flannel0")
                sh(f"ip -n {ns} link set flannel0 mtu 1472 up")
                sh(f"ip -n {ns} route add 10.244.0.0/16 dev flannel0")
        elif name == "udp":
            # The data path is the daemon's: `run` on both hosts, until each says it started.
            for i, ns in hosts.items():
                log = os.path.join(self.work, f"dp-udp-h{i}.log")
                self.datapath_start(self.datapath_agent(ns, "run", configs[i], i), log,
                                    lambda log=log: "udp data path started" in open(log).read(), f"vxlan-agent run on host {i}")
        else:
            for i, ns in hosts.items():
                result = subprocess.run(self.datapath_agent(ns, "sync", configs[i], i), capture_output=True, text=True)
                if result.returncode != 0:
                    raise RuntimeError(f"datapath {name}: `vxlan-agent sync` on host {i} exited {result.returncode}: "
                                       f"{result.stdout}{result.stderr}")
        # The path the case promises: direct to the peer's public IP, over flannel.1, or into flannel0.
        device = "flannel0" if name.startswith("udp") else "flannel.1" if name == "vxlan" else None
        for i, dst, peer in ((1, server[3], "198.18.0.2"), (2, client[3], "198.18.0.1")):
            got = sh(f"ip -n {hosts[i]} -o route get {dst}").stdout.split("\\")[0].strip()
            ok = (f"via {peer} dev eth0" in got) if device is None else (f"dev {device}" in got)
            if not ok:
                expected = f"via {peer} dev eth0" if device is None else f"dev {device}"
                reason = (f"vxlan-agent accepts the configuration, but host {i}'s route to the pod {dst} is "
                          f"`{got}`, not {expected}")
                if configs is None or name == "vxlan" or configs == "proxy":
                    raise RuntimeError(f"datapath {name}: {reason}")
                row["available"] = False
                row["reason"] = reason
                return
        row["route_h1"] = sh(f"ip -n {hosts[1]} -o route get {server[3]}").stdout.split("\\")[0].strip()

    def datapath_teardown(self, prefix, name, configs, row):
        """Removes the case: the hand routes, the proxies (their flannel0 goes with them), or
        the daemons and `vxlan-agent cleanup` on both hosts; whatever the agent's protocol still
        holds afterwards is flushed, and noted."""
        self.datapath_stop()
        for i, ns in ((1, f"{prefix}-h1"), (2, f"{prefix}-h2")):
            if configs is None:
                sh(f"ip -n {ns} route del 10.244.{3 - i}.0/24", check=False)
                continue
            if configs == "proxy":
                sh(f"ip -n {ns} link del flannel0", check=False)
                continue
            result = subprocess.run(self.datapath_agent(ns, "cleanup", configs[i], i), capture_output=True, text=True)
            left = sh(f"ip -n {ns} route show proto 152", check=False).stdout.strip()
            left += sh(f"ip -n {ns} -o link show flannel.1", check=False).stdout.strip()
            left += sh(f"ip -n {ns} -o link show flannel0", check=False).stdout.strip()
            if result.returncode != 0 or left:
                row.setdefault("cleanup_notes", []).append(
                    f"host {i}: cleanup exited {result.returncode}, left: {left or 'nothing'} {result.stderr.strip()}".strip())
                sh(f"ip -n {ns} route flush proto 152", check=False)
                sh(f"ip -n {ns} nexthop flush proto 152", check=False)
                sh(f"ip -n {ns} link del flannel.1", check=False)
                sh(f"ip -n {ns} link del flannel0", check=False)

    def datapath_run(self, prefix, client, server, seconds, tunnels=()):
        """One iperf3 run, client pod -> server pod, with its CPU accounting (`tunnels`: the
        pids of user-space data paths, the udp cases' daemons or proxies, whose CPU counts too)."""
        port = 5201
        srv = subprocess.Popen(["ip", "netns", "exec", server[2], "iperf3", "-s", "-1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        spawned.append(srv)
        try:
            for _ in range(100):
                if sh(f"ip netns exec {server[2]} ss -Hltn 'sport = :{port}'", check=False).stdout.strip():
                    break
                if srv.poll() is not None:
                    raise RuntimeError(f"iperf3 server exited {srv.returncode}: {srv.stderr.read()}")
                time.sleep(0.05)
            frag0 = datapath_fragments(prefix)
            busy0 = machine_busy()
            time.sleep(1)
            busy1, soft1 = machine_busy(), ksoftirqd_seconds()
            tunnel1 = sum(process_cpu_seconds(p) for p in tunnels)
            pid = os.fork()
            if pid == 0:
                fd = os.open(os.path.join(self.work, "dp-iperf3.json"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(fd, 1)
                os.execvp("ip", ["ip", "netns", "exec", client[2], "iperf3", "-c", server[3], "-p", str(port),
                                 "-t", str(seconds), "-J"])
            _, status, client_usage = os.wait4(pid, 0)
            busy2, soft2 = machine_busy(), ksoftirqd_seconds()
            tunnel2 = sum(process_cpu_seconds(p) for p in tunnels)
            with open(os.path.join(self.work, "dp-iperf3.json")) as f:
                text = f.read()
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"iperf3 client exited {os.waitstatus_to_exitcode(status)}: {text[-2000:]}")
            # The server exits after its one client; its rusage before Popen reaps it.
            deadline = time.time() + 10
            while True:
                wpid, wstatus, server_usage = os.wait4(srv.pid, os.WNOHANG)
                if wpid:
                    srv.returncode = os.waitstatus_to_exitcode(wstatus)
                    break
                if time.time() > deadline:
                    raise RuntimeError("iperf3 server did not exit after its client")
                time.sleep(0.05)
        finally:
            if srv.returncode is None:
                srv.kill()
                srv.wait()
            spawned.remove(srv)
        end = json.loads(text)["end"]
        received = end["sum_received"]
        iperf_cpu = sum(u.ru_utime + u.ru_stime for u in (client_usage, server_usage))
        cpu = iperf_cpu + (soft2 - soft1) + (tunnel2 - tunnel1)
        gbit = received["bytes"] * 8 / 1e9
        wall = busy2[1] - busy1[1]
        return {"bps": received["bits_per_second"], "retransmits": end["sum_sent"]["retransmits"],
                "cpu_seconds": round(cpu, 3), "iperf3_cpu_seconds": round(iperf_cpu, 3),
                "ksoftirqd_cpu_seconds": round(soft2 - soft1, 3), "cpu_per_gbit": cpu / gbit,
                "machine_busy_cores": round((busy2[0] - busy1[0]) / wall, 3),
                "machine_busy_cores_1s_before": round((busy1[0] - busy0[0]) / (busy1[1] - busy0[1]), 3),
                "fragments": datapath_fragments(prefix) - frag0}

    # ---- the daemon (`vxlan-agent run`) against a real etcd: issue 10's targets ----

    def limit_seconds(self, n, runs=5):
        """The C limit's own time to program n peers in a fresh namespace (the kernel's
        floor for the objects the agent writes: fdb, neighbor, nexthop, route): the
        fastest of `runs`, a floor being the best this machine did in this run."""
        key = f"C limit kernel seconds {n}"
        if key not in self.floors:
            values = []
            for r in range(runs):
                ns = netns(f"f{n}-{r}")
                try:
                    out = sh(f"ip netns exec {ns} {self.limit} apply {n}").stdout
                    values.append(json.loads(out)["seconds"])
                finally:
                    drop(ns)
            self.floors[key] = min(values)
        return self.floors[key]

    def iproute2_seconds(self, n):
        """`bridge -batch` + `ip -batch` of flannel's layout (fdb, neighbor, one route per
        peer with its own gateway) for n peers in a fresh namespace, one whole run."""
        batches = os.path.join(self.work, f"ip-{n}-classic")
        os.makedirs(batches, exist_ok=True)
        sh(f"python3 {HERE}/gen.py iproute2 {n} classic {batches}")
        ns = netns(f"fi{n}")
        try:
            script = (f"ip link add flannel.1 mtu 1450 address 0e:01:c6:12:00:01 type vxlan id 1 local 198.18.0.1 dev eth0 "
                      f"dstport 8472 nolearning && ip addr add 10.0.0.0/32 dev flannel.1 && ip link set flannel.1 up && "
                      f"bridge -batch {batches}/bridge.batch && ip -batch {batches}/ip.batch")
            seconds, out, err, status = timed(["ip", "netns", "exec", ns, "sh", "-c", script])
            if status != 0:
                raise RuntimeError(f"iproute2 classic: {err}")
            return seconds
        finally:
            drop(ns)

    def daemon_targets(self, samples):
        """Every daemon target of issue 10, each next to a baseline measured here."""
        d = self.results.setdefault("daemon", {})
        with EtcdCluster(self, "pr", hosts=2) as c:
            agent = c.start_agent(1)
            c.wait_routes(1, 0)
            settle(agent.pid)
            d["RSS at 0 peers"] = memory(agent.pid)
            mon = Monitor(c.ns(1), os.path.join(self.work, "pr-monitor.log"), "route", "neigh")
            try:
                put = c.client()
                print("propagation: a lease put in etcd -> its route in another node's kernel", flush=True)
                self.propagation(d, put, mon, agent.pid, 0, samples)
                c.put_leases([lease(i) for i in range(1, 10001)], per_txn=128)
                c.wait_routes(1, 10000, seconds=180)
                self.propagation(d, put, mon, agent.pid, 10000, samples)
                put.stdin.close()
                put.wait()
                print("repair: an entry of one peer deleted in the daemon's namespace -> written again", flush=True)
                self.repair(d, c, mon, agent.pid, 10000, samples)
            finally:
                mon.close()
            c.stop_agent(agent)
            print("join: `vxlan-agent run` starts in a cluster of 10,000 leases -> all their routes", flush=True)
            self.join(d, c, 2, 3 if samples > 11 else 1)
        print("burst: leases written in transactions -> all programmed", flush=True)
        with EtcdCluster(self, "bu") as c:
            agent = c.start_agent(1)
            c.wait_routes(1, 0)
            self.burst(d, c, agent.pid, 5000, 100, runs=3 if samples > 11 else 1)
        with EtcdCluster(self, "bb") as c:
            agent = c.start_agent(1)
            c.wait_routes(1, 0)
            self.burst(d, c, agent.pid, 20000, 128, runs=1)
            print("memory: the daemon with 50,000 peers programmed", flush=True)
            counter = RouteCounter(c.ns(1), 30000)
            c.put_leases([lease(i) for i in range(20001, 50001)], per_txn=128)
            counter.wait(300)
            c.wait_routes(1, 50000, seconds=60)
            settle(agent.pid, quiet=1.0)
            mem = memory(agent.pid)
            d["RSS at 50000 peers"] = mem
            base = d["RSS at 0 peers"]
            print(f"  VmHWM {mem['VmHWM'] / 1024:.1f} MiB, VmRSS {mem['VmRSS'] / 1024:.1f} MiB "
                  f"(at 0 peers: VmHWM {base['VmHWM'] / 1024:.1f}, VmRSS {base['VmRSS'] / 1024:.1f} MiB)", flush=True)

    def propagation(self, d, put, mon, pid, peers, samples):
        """From the moment the put returns (one client, its connection kept open) to
        `ip -ts monitor route`'s timestamp of the route; before each sample the daemon
        is idle (its CPU time still for a while), so nothing earlier is pending. Each
        probe lease is deleted after it is measured, and its route seen gone."""
        after_return, after_send, rtts = [], [], []
        for _ in range(samples):
            self.probe += 1
            key, value = lease(self.probe)
            dst = subnet(self.probe)
            settle(pid)
            start = mon.mark()
            t0, t1 = put.request("put", key, value)
            _, event = mon.wait(start, lambda e: e.key == dst and not e.deleted, what=f"route {dst}")
            after_return.append(event.stamp - t1)
            after_send.append(event.stamp - t0)
            rtts.append(t1 - t0)
            settle(pid)
            start = mon.mark()
            put.request("del", key)
            mon.wait(start, lambda e: e.key == dst and e.deleted, what=f"deletion of {dst}")
        row = {"p50": percentile(after_return, 50), "p99": percentile(after_return, 99), "samples": samples,
               "from_send_p50": percentile(after_send, 50), "put_rtt_p50": percentile(rtts, 50),
               "put_rtt_p99": percentile(rtts, 99), "values": [round(v, 5) for v in after_return]}
        d[f"propagation {peers}"] = row
        print(f"  {peers:>6,} peers: put returned -> route  p50 {ms(row['p50'])}, p99 {ms(row['p99'])} "
              f"(from the put's send p50 {ms(row['from_send_p50'])}; the put's round trip p50 {ms(row['put_rtt_p50'])}), "
              f"{samples} samples", flush=True)

    def repair(self, d, c, mon, pid, peers, samples):
        """A peer's route (then neighbor, then FDB entry) deleted with iproute2 in the
        daemon's namespace -> the daemon writes it again: from the delete's own event
        to the re-add's, both timestamped by the same `ip -ts monitor`. Samples spaced
        (the daemon idle before each). Baseline: the same delete followed at once by
        the re-add in one `ip -batch` (the kernel and the monitor, nothing else)."""
        ns = c.ns(1)
        floor = []
        for k in range(5):
            i = 1 + (k * 4099 + 17) % peers
            dst = subnet(i)
            line = sh(f"ip -n {ns} route show exact {dst} proto 152").stdout
            nhid = re.search(r"nhid (\d+)", line)
            # `replace`, `-force`: the daemon may have written the route again between the two lines.
            add = (f"route replace {dst} nhid {nhid[1]} proto 152" if nhid else
                   f"route replace {dst} via {dst.split('/')[0]} dev flannel.1 onlink proto 152")
            settle(pid)
            start = mon.mark()
            subprocess.run(["ip", "-n", ns, "-force", "-batch", "-"], input=f"route del {dst}\n{add}\n", text=True, check=True)
            i1, gone = mon.wait(start, lambda e: e.key == dst and e.deleted, what=f"deletion of {dst}")
            _, back = mon.wait(i1 + 1, lambda e: e.key == dst and not e.deleted, what=f"route {dst}")
            floor.append(back.stamp - gone.stamp)
        kinds = {
            "route": (lambda i: f"ip -n {ns} route del {subnet(i)}",
                      lambda i: subnet(i),
                      lambda e: e.deleted,
                      lambda e: not e.deleted and "proto" in e.rest),
            "neigh": (lambda i: f"ip -n {ns} neigh del {subnet(i).split('/')[0]} dev flannel.1",
                      lambda i: subnet(i).split("/")[0],
                      lambda e: e.deleted or "FAILED" in e.rest,
                      lambda e: not e.deleted and "lladdr" in e.rest and "PERMANENT" in e.rest),
            "fdb": (lambda i: f"bridge -n {ns} fdb del {vtep_mac(i)} dev flannel.1 dst {public_ip(i)} self",
                    lambda i: public_ip(i),
                    lambda e: e.deleted,
                    lambda e: not e.deleted and "lladdr" in e.rest),
        }
        for kind, (command, key_of, is_gone, is_back) in kinds.items():
            n = samples if kind == "route" else max(5, samples // 3)
            values, missed = [], 0
            for k in range(n):
                i = 1 + (k * 7919 + {"route": 1, "neigh": 2, "fdb": 3}[kind] * 1013) % peers
                key = key_of(i)
                settle(pid)
                start = mon.mark()
                sh(command(i))
                i1, gone = mon.wait(start, lambda e: e.key == key and is_gone(e), what=f"{kind} {key} deleted")
                try:
                    _, back = mon.wait(i1 + 1, lambda e: e.key == key and is_back(e), what=f"{kind} {key} written again",
                                       timeout=10)
                    values.append(back.stamp - gone.stamp)
                except TimeoutError:
                    missed += 1
            row = {"p50": percentile(values, 50) if values else None, "p99": percentile(values, 99) if values else None,
                   "samples": n, "not_repaired_within_10s": missed, "baseline_p50": percentile(floor, 50),
                   "values": [round(v, 5) for v in values]}
            d[f"repair {kind} {peers}"] = row
            words = {"route": "ip route del", "neigh": "ip neigh del", "fdb": "bridge fdb del"}[kind]
            print(f"  `{words}` x{n} at {peers:,} peers: p50 {ms(row['p50'])}, "
                  f"p99 {ms(row['p99'])}, not repaired within 10 s: {missed}  "
                  f"(baseline: del + add in one ip -batch {ms(row['baseline_p50'])})", flush=True)

    def join(self, d, c, host, runs):
        """`vxlan-agent run` starts on a host whose kernel holds nothing yet, in a cluster
        of 10,000 leases: from the moment it is started to the moment a netlink
        listener in its namespace has seen every peer's route. The floor, measured
        here: the etcd list of the leases + the kernel writing the same peers."""
        ul = c.ns("ul")
        expected = int(sh(f"{c.etcdctl} get --prefix --keys-only {SUBNETS} | grep -c subnets").stdout.strip())
        lists, ctl = [], []
        for _ in range(5):
            seconds, out, err, status = timed(["ip", "netns", "exec", ul, "curl", "-sS", "-o", "/dev/null", "-X", "POST",
                                               f"http://127.0.0.1:{c.port}/v3/kv/range", "-d", json.dumps(
                                                   {"key": b64(SUBNETS), "range_end": b64(SUBNETS[:-1] + "0")})])
            if status != 0:
                raise RuntimeError(f"curl of the etcd gateway: {err}")
            lists.append(seconds)
            seconds, out, err, status = timed(["sh", "-c", f"{c.etcdctl} get --prefix {SUBNETS} > /dev/null"])
            ctl.append(seconds)
        kernel = self.limit_seconds(expected)
        iproute2 = self.iproute2_seconds(expected)
        values = []
        ns = c.ns(host)
        for r in range(runs):
            counter = RouteCounter(ns, expected)
            start = time.time()
            agent = c.start_agent(host)
            done = counter.wait(120)
            values.append(done - start)
            c.wait_routes(host, expected, seconds=30)
            c.stop_agent(agent)
            c.flush(host)
        # The list's floor: the fastest of 5 through either of etcd's doors (the daemon uses the gateway).
        listing = min(lists + ctl)
        floor = listing + kernel
        row = {"median": statistics.median(values), "values": [round(v, 4) for v in values], "routes": expected,
               "etcd_list_curl": min(lists), "etcd_list_etcdctl": min(ctl),
               "kernel_c_limit": kernel, "kernel_iproute2_flannel_layout": iproute2, "floor": floor,
               "etcd_list": listing, "floor_iproute2": listing + iproute2}
        d["join 10000"] = row
        print(f"  start -> {expected:,} routes: median {row['median']:.3f} s {row['values']}; floor {floor:.3f} s "
              f"(fastest of 5: etcd list {row['etcd_list_curl']:.3f} s by curl of the gateway, {row['etcd_list_etcdctl']:.3f} s by etcdctl; "
              f"kernel {kernel:.3f} s by the C limit, {iproute2:.3f} s by ip -batch in flannel's layout): "
              f"{row['median'] / floor:.2f}x the floor", flush=True)

    def burst(self, d, c, pid, n, per_txn, runs):
        """n leases written in per_txn-key transactions as fast as etcd takes them ->
        all programmed: from the moment the last transaction returns to the moment a
        netlink listener in the daemon's namespace has seen the last of the n routes.
        Repeated after deleting the leases (and seeing their routes gone). Baseline:
        the C limit's kernel time for n peers; the write phase is recorded too."""
        values, writes = [], []
        leases = [lease(i) for i in range(1, n + 1)]
        for r in range(runs):
            if r:
                c.put_leases([(k, None) for k, _ in leases], per_txn=per_txn)
                c.wait_routes(1, 0, seconds=120)
            settle(pid)
            counter = RouteCounter(c.ns(1), n)
            t0 = time.time()
            last = c.put_leases(leases, per_txn=per_txn)
            done = counter.wait(300)
            values.append(done - last)
            writes.append(last - t0)
        c.wait_routes(1, n, seconds=30)
        row = {"median": statistics.median(values), "values": [round(v, 4) for v in values],
               "writes_seconds": [round(v, 3) for v in writes], "kernel_c_limit": self.limit_seconds(n)}
        d[f"burst {n}/{per_txn}"] = row
        print(f"  {n:,} leases in {per_txn}-key txns: last write -> all programmed {row['median']:.3f} s {row['values']} "
              f"(writing them took {row['writes_seconds']} s; the kernel alone needs {row['kernel_c_limit']:.3f} s "
              f"for {n:,} peers)", flush=True)


SUBNETS = "/coreos.com/network/subnets/"


def b64(text):
    return base64.b64encode(text.encode()).decode()


def subnet(i):
    return f"10.{i >> 8}.{i & 255}.0/24"


def public_ip(i):
    return f"198.19.{i >> 8 & 255}.{i & 255}"


def vtep_mac(i):
    return f"22:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"


def lease(i):
    """Peer i's lease as flanneld writes it."""
    value = json.dumps({"PublicIP": public_ip(i), "PublicIPv6": None, "BackendType": "vxlan",
                        "BackendData": {"VNI": 1, "VtepMAC": vtep_mac(i)}}, separators=(",", ":"))
    return SUBNETS + subnet(i).replace("/", "-"), value


def ms(seconds):
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.2f} ms" if abs(seconds) < 0.001 else f"{seconds * 1000:.1f} ms"


def percentile(values, p):
    """Nearest rank (p99 of fewer than 100 samples is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def settle(pid, quiet=0.3, timeout=20):
    """Waits until the process has used no CPU for `quiet` seconds: nothing pending."""
    deadline = time.time() + timeout
    last, since = cpu_ticks(pid), time.time()
    while time.time() < deadline:
        time.sleep(0.05)
        now = cpu_ticks(pid)
        if now != last:
            last, since = now, time.time()
        elif time.time() - since >= quiet:
            return
    raise RuntimeError(f"process {pid} still busy after {timeout} s")


def memory(pid):
    """VmHWM and VmRSS (KiB) from /proc/PID/status."""
    status = open(f"/proc/{pid}/status").read()
    return {k: int(re.search(rf"^{k}:\s+(\d+) kB", status, re.M)[1]) for k in ("VmHWM", "VmRSS")}


class Event:
    __slots__ = ("stamp", "deleted", "key", "rest")

    def __init__(self, stamp, deleted, key, rest):
        self.stamp, self.deleted, self.key, self.rest = stamp, deleted, key, rest


class Monitor:
    """`ip -ts monitor OBJECTS` in a namespace, to a file read as it grows. Each line
    is an Event: ip's timestamp of it, Deleted or not, its first word (a route's
    destination, a neighbor's address, an FDB entry's dst), the rest."""
    LINE = re.compile(r"\[([0-9T:.-]+)\] (Deleted )?(\S+)(.*)")

    def __init__(self, ns, path, *objects):
        self.out = open(path, "w")
        self.proc = subprocess.Popen(["ip", "-n", ns, "-ts", "monitor", *objects], stdout=self.out,
                                     stderr=subprocess.STDOUT)
        spawned.append(self.proc)
        self.reader = open(path)
        self.partial = ""
        self.events = []
        self.subscribed(ns)

    def subscribed(self, ns, timeout=30):
        """Returns once the monitor has subscribed: a sentinel route in a spare table,
        added and deleted until the monitor reports it (a fixed sleep can lose the
        first event on a loaded machine)."""
        deadline = time.time() + timeout
        while True:
            subprocess.run(["ip", "-n", ns, "route", "add", "blackhole", "198.19.255.254/32", "table", "252"],
                           stderr=subprocess.DEVNULL)
            time.sleep(0.02)
            self.poll()
            subprocess.run(["ip", "-n", ns, "route", "del", "blackhole", "198.19.255.254/32", "table", "252"],
                           stderr=subprocess.DEVNULL)
            if any("198.19.255.254" in e.key + e.rest for e in self.events):
                break
            if time.time() > deadline:
                raise TimeoutError(f"`ip monitor` in {ns} never reported its sentinel route")
        time.sleep(0.05)
        self.poll()

    def poll(self):
        chunk = self.reader.read()
        if not chunk:
            return
        lines = (self.partial + chunk).split("\n")
        self.partial = lines.pop()
        for line in lines:
            m = self.LINE.match(line)
            if m:
                stamp = datetime.datetime.fromisoformat(m[1]).timestamp()
                self.events.append(Event(stamp, bool(m[2]), m[3], m[4]))

    def mark(self):
        self.poll()
        return len(self.events)

    def wait(self, start, match, what, timeout=10):
        deadline = time.time() + timeout
        index = start
        while True:
            self.poll()
            while index < len(self.events):
                if match(self.events[index]):
                    return index, self.events[index]
                index += 1
            if time.time() > deadline:
                raise TimeoutError(f"no event for {what} in `ip monitor` within {timeout} s")
            time.sleep(0.002)

    def close(self):
        self.proc.terminate()
        self.proc.wait()
        self.out.close()
        self.reader.close()


class RouteCounter:
    """`limit routes N` in a namespace (Benchmarks/limit.c): the wall-clock time at
    which the kernel has announced the N-th route of protocol 152, read from its
    route events by a C listener that keeps up with them and loses none."""

    def __init__(self, ns, want):
        self.want = want
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, os.path.join(HERE, "bin", "limit"), "routes",
                                      str(want)], stdout=subprocess.PIPE, text=True)
        spawned.append(self.proc)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the route counter did not start")

    def wait(self, timeout):
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"the kernel did not announce {self.want} routes within {timeout} s")
        if self.proc.returncode != 0:
            raise RuntimeError(f"the route counter: {out.strip()}")
        return float(out.strip())


# One etcd client kept open (HTTP/1.1 keep-alive to the gateway), driven over stdin:
# each request prints the wall-clock times it was sent and its response read.
CLIENT = r"""
import base64, http.client, json, sys, time
c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]))
def b(s): return base64.b64encode(s.encode()).decode()
for line in sys.stdin:
    verb, key, value = json.loads(line)
    body = {'key': b(key)}
    if verb == 'put':
        body['value'] = b(value)
    t0 = time.time()
    c.request('POST', '/v3/kv/put' if verb == 'put' else '/v3/kv/deleterange', json.dumps(body))
    c.getresponse().read()
    t1 = time.time()
    print(t0, t1, flush=True)
"""

# Writes (key, value) lines from stdin through the gateway, n keys per transaction
# (a null value deletes the key); prints the wall-clock time the last one returned.
WRITER = r"""
import base64, json, sys, time, urllib.request
def b(s): return base64.b64encode(s.encode()).decode()
port, n = int(sys.argv[1]), int(sys.argv[2])
kvs = [json.loads(l) for l in sys.stdin]
for i in range(0, len(kvs), n):
    ops = [{'request_put': {'key': b(k), 'value': b(v)}} if v is not None else
           {'request_delete_range': {'key': b(k)}} for k, v in kvs[i:i + n]]
    urllib.request.urlopen(urllib.request.Request(f'http://127.0.0.1:{port}/v3/kv/txn',
                                                  json.dumps({'success': ops}).encode())).read()
print(time.time())
"""


class Client:
    def __init__(self, ns, port):
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", CLIENT, str(port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        spawned.append(self.proc)
        self.stdin = self.proc.stdin

    def request(self, verb, key, value=""):
        self.proc.stdin.write(json.dumps([verb, key, value]) + "\n")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the etcd client died")
        t0, t1 = map(float, line.split())
        return t0, t1

    def wait(self):
        self.proc.wait()


class EtcdCluster:
    """`hosts` host namespaces and an underlay (Tests/cluster/cluster.sh, named
    <bench prefix>-<tag>-*), an etcd in the underlay namespace on 127.0.0.1 and
    198.18.0.254 at random ports with its data in the bench's temp dir, flannel's
    network config in it; `start_agent(i)` runs `vxlan-agent run` on host i.
    Everything (agents, etcd, the namespaces) goes on the way out, also on failure."""

    def __init__(self, bench, tag, hosts=1):
        self.bench, self.tag, self.hosts = bench, tag, hosts
        self.prefix = f"{PREFIX}-{tag}"
        self.script = os.path.join(ROOT, "Tests", "cluster", "cluster.sh")
        self.port = random.SystemRandom().randrange(20000, 40000, 2)
        self.etcdctl = f"ip netns exec {self.ns('ul')} etcdctl --endpoints http://127.0.0.1:{self.port}"
        self.etcd = None
        self.agents = []

    def ns(self, where):
        return f"{self.prefix}-{where}" if where == "ul" else f"{self.prefix}-h{where}"

    def __enter__(self):
        created.append(self.prefix + "-cluster")
        try:
            sh(f"bash {self.script} up {self.prefix} {self.hosts} 0")
            sh(f"ip -n {self.ns('ul')} addr add 198.18.0.254/24 dev br0")
            data = os.path.join(self.bench.work, f"{self.tag}-etcd")
            self.etcd = subprocess.Popen(
                ["ip", "netns", "exec", self.ns("ul"), "etcd", "--name", "bench", "--data-dir", data,
                 "--listen-client-urls", f"http://198.18.0.254:{self.port},http://127.0.0.1:{self.port}",
                 "--advertise-client-urls", f"http://198.18.0.254:{self.port}",
                 "--listen-peer-urls", f"http://127.0.0.1:{self.port + 1}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.port + 1}",
                 "--initial-cluster", f"bench=http://127.0.0.1:{self.port + 1}"],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.bench.work, f"{self.tag}-etcd.log"), "w"))
            for _ in range(100):
                if sh(f"{self.etcdctl} endpoint health", check=False).returncode == 0:
                    break
                time.sleep(0.1)
            sh(f"{self.etcdctl} put /coreos.com/network/config "
               f"'{{\"Network\": \"10.0.0.0/8\", \"SubnetMin\": \"10.255.0.0\"}}'")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for agent in list(self.agents):
            self.stop_agent(agent)
        if self.etcd:
            self.etcd.terminate()
            self.etcd.wait()
        if self.bench.logs:
            os.makedirs(self.bench.logs, exist_ok=True)
            for name in os.listdir(self.bench.work):
                if name.startswith(f"{self.tag}-") and name.endswith(".log"):
                    shutil.copy(os.path.join(self.bench.work, name), self.bench.logs)
        for i in range(1, self.hosts + 1):  # a device with 50,000 nexthops is slow to delete with them
            self.flush(i)
        sh(f"bash {self.script} down {self.prefix}", check=False)
        created.remove(self.prefix + "-cluster")

    def flush(self, i):
        ns = self.ns(i)
        sh(f"ip -n {ns} route flush proto 152", check=False)
        sh(f"ip -n {ns} nexthop flush proto 152", check=False)
        sh(f"ip -n {ns} link del flannel.1", check=False)

    def start_agent(self, i):
        config = os.path.join(self.bench.work, f"{self.tag}-h{i}.json")
        with open(config, "w") as f:
            json.dump({"node": f"h{i}", "publicIP": f"198.18.0.{i}",
                       "etcd": {"endpoints": [f"http://198.18.0.254:{self.port}"]},
                       "subnetFile": f"{self.bench.work}/{self.tag}-h{i}-subnet.env", "cniConfFile": "",
                       "ipMasq": False, "metricsAddress": ""}, f)
        # `ip netns exec` execs the agent: the Popen's pid is the agent's.
        agent = subprocess.Popen(["ip", "netns", "exec", self.ns(i), self.bench.agent, "run", "--config", config, *(["--log-level", os.environ["VXA_LOG"]] if os.environ.get("VXA_LOG") else []),
                                  "--lock-file", f"{self.bench.work}/{self.tag}-h{i}.lock"],
                                 stdout=subprocess.DEVNULL,
                                 stderr=open(f"{self.bench.work}/{self.tag}-h{i}.log", "a"))
        agent.host = i
        self.agents.append(agent)
        return agent

    def stop_agent(self, agent):
        agent.terminate()
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
        self.agents.remove(agent)

    def client(self):
        return Client(self.ns("ul"), self.port)

    def put_leases(self, leases, per_txn=1):
        """Writes (key, value) pairs (value None: delete) from one process, per_txn keys
        per transaction; returns the wall-clock time the last write returned."""
        out = subprocess.run(["ip", "netns", "exec", self.ns("ul"), "python3", "-c", WRITER, str(self.port),
                              str(per_txn)], check=True, capture_output=True, text=True,
                             input="".join(json.dumps(kv) + "\n" for kv in leases))
        return float(out.stdout.strip())

    def routes(self, i):
        return int(sh(f"ip -n {self.ns(i)} route show proto 152 | wc -l").stdout.strip())

    def wait_routes(self, i, n, seconds=120):
        deadline = time.time() + seconds
        while self.routes(i) != n:
            if time.time() > deadline:
                raise RuntimeError(f"host {i} did not reach {n} routes (has {self.routes(i)}): "
                                   f"see {self.bench.work}/{self.tag}-h{i}.log")
            time.sleep(0.25)


def machine_busy():
    """(seconds of CPU busy on the whole machine since boot, a monotonic clock): /proc/stat's
    user + nice + system + irq + softirq (not idle, iowait or steal)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return sum(fields[k] for k in (0, 1, 2, 5, 6)) / os.sysconf("SC_CLK_TCK"), time.monotonic()


def ksoftirqd_seconds():
    """The CPU time (user + system) of the ksoftirqd threads: softirq work done outside a process."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.index("(") + 1:stat.rindex(")")].startswith("ksoftirqd/"):
            rest = stat[stat.rindex(")") + 2:].split()
            total += int(rest[11]) + int(rest[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid):
    """user + system CPU seconds of a process (all its threads), from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def datapath_fragments(prefix):
    """IP fragments created (or that failed) on both hosts so far: 0 during a run means the
    MTUs fit (a pod's 1450-byte packets in VXLAN's 50 bytes on a 1500-byte underlay)."""
    total = 0
    for i in (1, 2):
        lines = sh(f"ip netns exec {prefix}-h{i} cat /proc/net/snmp", check=False).stdout.splitlines()
        ip = [line.split()[1:] for line in lines if line.startswith("Ip:")]
        if len(ip) == 2:
            row = dict(zip(ip[0], ip[1]))
            total += int(row.get("FragCreates", 0)) + int(row.get("FragFails", 0))
    return total


def print_datapath(d):
    print(f"\nDatapath ({d['setup']}; CPU: {d['cpu_per_gbit_is']}):")
    table = [("case", "Gbit/s median (min-max)", "vs plain", "retransmits median (min-max)", "CPU-s/Gbit median", "path")]
    for name, row in d["cases"].items():
        if "gbps" in row:
            g, r, c = row["gbps"], row["retransmits"], row["cpu_per_gbit"]
            table.append((name, f"{g['median']:.2f} ({g['min']:.2f}-{g['max']:.2f})",
                          f"{row['vs_plain']:.2f}" if "vs_plain" in row else "-",
                          f"{r['median']:g} ({r['min']}-{r['max']})", f"{c['median']:.3f}", row["path"]))
        else:
            table.append((name, "not available in this build", "", "", "", row.get("reason", "not measured")))
    widths = [max(len(t[k]) for t in table) for k in range(5)]
    for n, t in enumerate(table):
        print("  " + " | ".join(c.ljust(w) for c, w in zip(t[:5], widths)) + " | " + t[5])
        if n == 0:
            print("  " + "-+-".join("-" * w for w in widths) + "-+-" + "-" * 4)
    notes = [f"  {name}: fragments during its runs: {row['fragments']}" for name, row in d["cases"].items()
             if row.get("fragments")]
    notes += [f"  {name}: {note}" for name, row in d["cases"].items() for note in row.get("cleanup_notes", [])]
    for note in notes:
        print(note)


def daemon_summary(results):
    """One row per target of issue 10: value, baseline, ratio, pass/fail."""
    rows = []
    d = results.get("daemon", {})

    def row(target, issue, value, baseline, what, ratio, passed, unit="s"):
        rows.append({"target": target, "issue": issue, "value": value, "baseline": baseline, "baseline_is": what,
                     "ratio": ratio, "pass": passed, "unit": unit})

    for peers in (0, 10000):
        p = d.get(f"propagation {peers}")
        if p:
            row(f"propagation p50, {peers:,} peers (put returned -> route)", "<= 5 ms", p["p50"], p["put_rtt_p50"],
                "the put's round trip p50", p["p50"] / p["put_rtt_p50"], p["p50"] <= 0.005)
            row(f"propagation p99, {peers:,} peers", "(reported)", p["p99"], p["put_rtt_p99"],
                "the put's round trip p99", p["p99"] / p["put_rtt_p99"], None)
    b = d.get("burst 5000/100")
    if b:
        row("burst: 5,000 leases in 100-key txns, last write -> all programmed", "<= 1 s", b["median"],
            b["kernel_c_limit"], "kernel alone, 5,000 peers (C limit, fastest)", b["median"] / b["kernel_c_limit"],
            b["median"] <= 1.0)
    b = d.get("burst 20000/128")
    if b:
        row("burst: 20,000 leases in 128-key txns, last write -> all programmed", "(reported)", b["median"],
            b["kernel_c_limit"], "kernel alone, 20,000 peers (C limit, fastest)", b["median"] / b["kernel_c_limit"], None)
    for kind, words in (("route", "ip route del"), ("neigh", "ip neigh del"), ("fdb", "bridge fdb del")):
        r = d.get(f"repair {kind} 10000")
        if r:
            ok = r["p50"] is not None and r["p50"] <= 0.020 and not r["not_repaired_within_10s"]
            row(f"repair p50, 10,000 peers: `{words}` -> written again" + ("" if kind == "route" else " (same number)"),
                "<= 20 ms", r["p50"], r["baseline_p50"], "del + add in one ip -batch",
                r["p50"] / r["baseline_p50"] if r["p50"] is not None else None, ok)
            if kind == "route":
                row("repair p99, 10,000 peers: `ip route del`", "(reported)", r["p99"], r["baseline_p50"],
                    "del + add in one ip -batch", r["p99"] / r["baseline_p50"] if r["p99"] is not None else None, None)
    j = d.get("join 10000")
    if j:
        row(f"join: start -> {j['routes']:,} routes", "<= 3x floor", j["median"], j["floor"],
            "fastest etcd list + fastest kernel (C limit)", j["median"] / j["floor"],
            j["median"] <= 3 * j["floor"])
        row("join vs the floor with iproute2 in flannel's layout", "(reported)", j["median"], j["floor_iproute2"],
            "etcd list + ip -batch, flannel's layout", j["median"] / j["floor_iproute2"], None)
    m, m0 = d.get("RSS at 50000 peers"), d.get("RSS at 0 peers")
    if m and m0:
        row("RSS at 50,000 peers: VmHWM", "<= 64 MiB", m["VmHWM"] / 1024, m0["VmHWM"] / 1024,
            "VmHWM of the idle daemon at 0 peers", m["VmHWM"] / m0["VmHWM"], m["VmHWM"] <= 64 * 1024, "MiB")
        row("RSS at 50,000 peers: VmRSS (settled)", "<= 64 MiB", m["VmRSS"] / 1024, m0["VmRSS"] / 1024,
            "VmRSS of the idle daemon at 0 peers", m["VmRSS"] / m0["VmRSS"], m["VmRSS"] <= 64 * 1024, "MiB")
    s = results.get("10000", {})
    if "agent cold" in s and "iproute2 classic layout" in s:
        cold, ip = s["agent cold"]["median"], s["iproute2 classic layout"]["median"]
        row("sync cold, 10,000 peers, vs ip -batch in flannel's layout", ">= 12x faster", cold, ip,
            "iproute2, flannel's layout", ip / cold, ip / cold >= 12)
    if "agent no-op" in s and "iproute2 three dumps" in s:
        noop, dumps = s["agent no-op"]["median"], s["iproute2 three dumps"]["median"]
        row(f"sync no-op, 10,000 peers ({s['agent no-op']['writes']} writes)", "<= 1.0x, 0 writes", noop, dumps,
            "iproute2's three dumps", noop / dumps, noop / dumps <= 1.0 and s["agent no-op"]["writes"] == 0)
    return rows


def print_summary(rows, mode):
    print(f"\nIssue 10's targets ({mode} mode; value and baseline measured in this run):")
    if not rows:
        print("  none measured in this mode (`daemon`, `quick` and `full` measure them)")
        return

    def fmt(v, unit):
        if v is None:
            return "-"
        if unit == "s":
            return f"{v * 1000:.2f} ms" if abs(v) < 0.001 else (f"{v * 1000:.1f} ms" if abs(v) < 1 else f"{v:.3f} s")
        return f"{v:.1f} {unit}"

    table = [("target", "issue", "value", "baseline", "ratio", "result")]
    for r in rows:
        table.append((r["target"], r["issue"], fmt(r["value"], r["unit"]),
                      f"{fmt(r['baseline'], r['unit'])} ({r['baseline_is']})",
                      "-" if r["ratio"] is None else f"{r['ratio']:.2f}",
                      {True: "pass", False: "FAIL", None: ""}[r["pass"]]))
    widths = [max(len(t[k]) for t in table) for k in range(6)]
    for n, t in enumerate(table):
        print("  " + " | ".join(c.ljust(w) for c, w in zip(t, widths)).rstrip())
        if n == 0:
            print("  " + "-+-".join("-" * w for w in widths))


def main(argv):
    if len(argv) < 3 or argv[2] not in ("quick", "full", "smoke", "sync", "daemon", "datapath", "ipv6"):
        print(__doc__, file=sys.stderr)
        return 2
    mode = argv[2]
    runs = int(argv[argv.index("--runs") + 1]) if "--runs" in argv else (1 if mode == "smoke" else 5)
    out_dir = argv[argv.index("--out") + 1] if "--out" in argv else os.path.join(ROOT, "bench-results")
    os.makedirs(os.path.join(HERE, "bin"), exist_ok=True)
    sh(f"cc -O2 -Wall -o {HERE}/bin/limit {HERE}/limit.c $(pkg-config --cflags --libs libmnl)")
    sh(f"cc -O2 -Wall -o {HERE}/bin/flannel_proxy {HERE}/flannel_proxy.c")
    sizes = {"smoke": [100], "quick": [1000, 10000], "full": [1000, 10000, 50000], "sync": [1000, 10000], "daemon": [],
             "datapath": [], "ipv6": []}[mode]
    # The datapath table's own counts: 5 iperf3 runs per case (--runs in datapath mode), 5 s each.
    dp_runs = runs if mode == "datapath" and "--runs" in argv else 5
    dp_seconds = int(argv[argv.index("--seconds") + 1]) if "--seconds" in argv else 5
    if mode == "datapath" and not shutil.which("iperf3"):
        print("iperf3 is missing (make deps-bench installs it)", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="vxa-bench-")
    bench = Bench(argv[1], runs, work, logs=os.path.join(out_dir, f"{mode}-logs"))
    started, load = time.time(), os.getloadavg()
    try:
        for n in sizes:
            print(f"\nN = {n:,} peers", flush=True)
            bench.scenario_limit(n)
            bench.scenario_agent(n)
            if n <= 10000:
                bench.scenario_iproute2(n, "classic")
                bench.scenario_iproute2(n, "nexthop")
        if mode == "full":
            print("\nN = 20,000 peers (iproute2 only: flannel's layout needs minutes at 50,000)", flush=True)
            bench.scenario_iproute2(20000, "classic")
            bench.scenario_iproute2(20000, "nexthop")
        if mode in ("quick", "full", "ipv6"):
            print("\nIPv6 plane (dual stack), N = 10,000 peers", flush=True)
            bench.scenario_ipv6(10000)
        if mode not in ("smoke", "sync", "datapath", "ipv6"):
            if not shutil.which("etcd"):
                raise RuntimeError("etcd is missing (make deps-bench installs it): the daemon targets need it")
            print("\nThe daemon (`vxlan-agent run`) against etcd", flush=True)
            bench.daemon_targets(samples=21 if mode == "quick" else 41)
        if mode not in ("smoke", "sync", "daemon", "ipv6") and shutil.which("iperf3"):
            print(f"\ndatapath: pod-to-pod iperf3, {', '.join(c[0] for c in Bench.DATAPATH_CASES)}; "
                  f"{dp_runs} rounds of {dp_seconds} s each", flush=True)
            bench.datapath(runs=dp_runs, seconds=dp_seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bench.results["machine"] = {"kernel": platform.release(), "cpus": os.cpu_count(), "mode": mode,
                                "runs": dp_runs if mode == "datapath" else runs,
                                "seconds": round(time.time() - started, 1),
                                # Other work on the machine skews every figure: the load average before and after.
                                "loadavg_1_5_15_before": load, "loadavg_1_5_15_after": os.getloadavg()}
    bench.results["summary"] = daemon_summary(bench.results)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{mode}.json"), "w") as f:
        json.dump(bench.results, f, indent=2)
    print_ratios(bench.results)
    if "datapath" in bench.results:
        print_datapath(bench.results["datapath"])
    if mode not in ("datapath", "ipv6"):
        print_summary(bench.results["summary"], mode)
    elif mode == "ipv6":
        print(f"\n  machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} before, "
              f"{bench.results['machine']['loadavg_1_5_15_after'][0]:.2f} after")
    else:
        load_after = bench.results["machine"]["loadavg_1_5_15_after"]
        print(f"\n  machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} before, {load_after[0]:.2f} after "
              f"(other work on the machine lowers every figure; the rounds interleave the cases so it falls on all)")
    return 0


def print_ratios(results):
    if any((n.isdigit() and "agent cold" in rows) or "agent IPv6 cold" in rows for n, rows in results.items()):
        print("\nRatios (medians, same run):")
    for n, rows in results.items():
        if not n.isdigit() or "agent cold" not in rows:
            continue
        c = rows["C limit cold"]["median"]
        d = rows["C limit dump"]["median"]
        lines = [f"  N={int(n):,}: cold agent/C {rows['agent cold']['median'] / c:.2f}",
                 f"no-op agent/C-dump {rows['agent no-op']['median'] / d:.2f} ({rows['agent no-op']['writes']} writes)"]
        if "iproute2 classic layout" in rows:
            lines.append(f"iproute2-flannel/agent cold {rows['iproute2 classic layout']['median'] / rows['agent cold']['median']:.1f}x")
        per_write = c / rows["C limit cold"]["messages"]
        # Target: within 2x of (no-op + the C program's time for the same writes).
        budget = 2 * (rows["agent no-op"]["median"] + per_write * rows["agent churn 4x1%"]["writes"])
        lines.append(f"churn {rows['agent churn 4x1%']['median']:.3f} s vs budget {budget:.3f} s "
                     f"({rows['agent churn 4x1%']['writes']} writes of {3 * int(n)} entries)")
        print(", ".join(lines))
    for key, rows in results.items():
        if not key.endswith(" IPv6") or "agent IPv6 cold" not in rows:
            continue
        n = int(key.split()[0])
        ip6, cold6 = rows["iproute2 IPv6 classic layout"]["median"], rows["agent IPv6 cold"]["median"]
        ipd, cold = rows["iproute2 dual classic layout"]["median"], rows["agent dual cold"]["median"]
        print(f"  N={n:,} IPv6 (dual stack): iproute2-flannel IPv6/agent IPv6 cold {ip6 / cold6:.1f}x "
              f"({ip6:.3f} / {cold6:.3f} s, the agent's IPv4 plane a no-op in it), "
              f"iproute2-flannel dual/agent dual cold {ipd / cold:.1f}x ({ipd:.3f} / {cold:.3f} s), "
              f"no-op {rows['agent dual no-op']['median']:.3f} s ({rows['agent dual no-op']['writes']} writes)")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
