"""PyKMIP's own client doing what crates/atrest/examples/kmip_get_load.rs does: CLIENTS
threads, each with its own connection, each fetching key UID COUNT times. Prints one JSON
line in the same shape, so bench/kmip-get.sh can put them side by side.

usage: pykmip_get_load.py HOST PORT CA CERT KEY UID CLIENTS COUNT VERSION
"""
import json
import sys
import threading
import time

from kmip import enums
from kmip.pie.client import ProxyKmipClient


def main():
    host, port, ca, cert, key, uid, clients, count, version = sys.argv[1:]
    clients, count = int(clients), int(count)
    kmip_version = {"1.2": enums.KMIPVersion.KMIP_1_2, "1.4": enums.KMIPVersion.KMIP_1_4,
                    "2.0": enums.KMIPVersion.KMIP_2_0}[version]
    barrier = threading.Barrier(clients + 1)
    results = [None] * clients

    def worker(i):
        c = ProxyKmipClient(hostname=host, port=int(port), cert=cert, key=key, ca=ca,
                            config_file="/dev/null", kmip_version=kmip_version)
        with c:
            c.get(uid)  # connect before the clock starts
            barrier.wait()
            lat = []
            for _ in range(count):
                t = time.perf_counter()
                k = c.get(uid)
                lat.append(time.perf_counter() - t)
                assert len(k.value) == 32
            results[i] = lat

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = sorted(x for r in results for x in r)
    pct = lambda p: lat[int((len(lat) - 1) * p)] * 1000
    print(json.dumps({"client": "pykmip", "clients": clients, "gets": len(lat),
                      "seconds": round(wall, 3), "gets_per_s": round(len(lat) / wall, 1),
                      "p50_ms": round(pct(0.5), 3), "p99_ms": round(pct(0.99), 3)}))


if __name__ == "__main__":
    main()
