# Records etcd 3.4's JSON gateway answers into Fuzz/corpus/etcd/ (one answer body per file) from an
# etcd of its own on 127.0.0.1 (random ports, temp data dir, killed at the end).
# Run from the repository root: python3 Fuzz/record/etcd.py Fuzz/corpus/etcd
import base64, json, os, random, shutil, socket, subprocess, sys, tempfile, time, urllib.request, threading

out = sys.argv[1]
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
client, peer = free_port(), free_port()
data = tempfile.mkdtemp(prefix="vxa-fuzz-etcd-")
etcd = subprocess.Popen(["etcd", "--data-dir", data, "--listen-client-urls", f"http://127.0.0.1:{client}",
    "--advertise-client-urls", f"http://127.0.0.1:{client}", "--listen-peer-urls", f"http://127.0.0.1:{peer}",
    "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}", "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
base = f"http://127.0.0.1:{client}"
def b64(s): return base64.b64encode(s.encode()).decode()
def post(path, body, name=None):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r: text = r.read()
    except urllib.error.HTTPError as e: text = e.read()
    if name: open(os.path.join(out, name), "wb").write(text)
    return json.loads(text.split(b"\n")[0])
try:
    for _ in range(100):
        try: post("/v3/kv/range", {"key": b64("x")}); break
        except Exception: time.sleep(0.1)
    prefix = "/coreos.com/network/"
    post("/v3/kv/put", {"key": b64(prefix + "config"), "value": b64(open("deploy/net-conf.example.json").read())}, "put")
    lease = post("/v3/lease/grant", {"TTL": "60", "ID": "0"}, "lease-grant")["ID"]
    value = '{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:01:c6:12:00:02"}}'
    key = prefix + "subnets/10.244.1.0-24"
    post("/v3/kv/txn", {"compare": [{"key": b64(key), "target": "VERSION", "result": "EQUAL", "version": "0"}],
        "success": [{"request_put": {"key": b64(key), "value": b64(value), "lease": lease}}], "failure": []}, "txn-succeeded")
    post("/v3/kv/txn", {"compare": [{"key": b64(key), "target": "VERSION", "result": "EQUAL", "version": "0"}],
        "success": [{"request_put": {"key": b64(key), "value": b64(value), "lease": lease}}], "failure": []}, "txn-failed")
    post("/v3/kv/range", {"key": b64(prefix + "subnets/"), "range_end": b64(prefix + "subnets0")}, "range-leases")
    post("/v3/kv/range", {"key": b64(prefix + "nothing")}, "range-empty")
    post("/v3/lease/keepalive", {"ID": lease}, "lease-keepalive")
    post("/v3/lease/keepalive", {"ID": "12345"}, "lease-keepalive-unknown")
    post("/v3/lease/timetolive", {"ID": lease}, "lease-timetolive")
    post("/v3/kv/put", {"key": b64("/x"), "value": b64("y"), "lease": "12345"}, "error-lease-not-found")
    post("/v3/kv/put", {"key": b64("/x"), "value": b64("y")})
    post("/v3/kv/deleterange", {"key": b64("/x")}, "deleterange")
    # A watch: created, then a put and a delete, recorded as the stream's bytes.
    watch = urllib.request.urlopen(urllib.request.Request(base + "/v3/watch", data=json.dumps({"create_request": {
        "key": b64(prefix + "subnets/"), "range_end": b64(prefix + "subnets0"), "start_revision": "1", "progress_notify": True}}).encode()), timeout=10)
    stream = []
    def reader():
        while True:
            line = watch.readline()
            if not line: break
            stream.append(line)
    t = threading.Thread(target=reader, daemon=True); t.start()
    time.sleep(0.5)
    key2 = prefix + "subnets/10.244.2.0-24"
    post("/v3/kv/put", {"key": b64(key2), "value": b64(value.replace("198.18.0.2", "198.18.0.3"))})
    post("/v3/kv/deleterange", {"key": b64(key2)})
    time.sleep(0.5)
    open(os.path.join(out, "watch-stream"), "wb").write(b"".join(stream))
    rev = post("/v3/kv/range", {"key": b64("/")})["header"]["revision"]
    post("/v3/kv/compaction", {"revision": rev})
    w = urllib.request.urlopen(urllib.request.Request(base + "/v3/watch", data=json.dumps({"create_request": {
        "key": b64(prefix), "range_end": b64("/coreos.com/network0"), "start_revision": "2"}}).encode()), timeout=10)
    open(os.path.join(out, "watch-compacted"), "wb").write(w.readline() + w.readline())
    post("/v3/lease/revoke", {"ID": lease}, "lease-revoke")
finally:
    etcd.kill(); etcd.wait(); shutil.rmtree(data, ignore_errors=True)
