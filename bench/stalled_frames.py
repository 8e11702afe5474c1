#!/usr/bin/env python3
"""Produce throughput with stalled frames on the broker, as a ratio of
without them.

A stalled frame: a connection that sent only the 32-byte header of a
produce request announcing FRAME_BYTES (64 MiB) and nothing after it.

    bench/stalled_frames.py hold HOST PORT [COUNT] [FRAME_BYTES]
        holds COUNT (16) stalled frames until SIGTERM/SIGINT, then prints
        how many the broker still keeps open.

    bench/stalled_frames.py pairs [PAIRS] [DURATION_S] [EXTRA_FLAGS...]
        PAIRS (5) times: a fresh `mamba serve` (release build, default
        settings, a temporary data directory) loaded by `mamba-bench
        produce` for DURATION_S (10) seconds, 2 of them warm-up, and the
        same with 16 stalled frames held meanwhile, in alternating order.
        Prints each pair and the medians of the per-pair ratios
        (throughput, and the broker's CPU time per MB). EXTRA_FLAGS go to
        mamba-bench (e.g. --durability none). With BASE_SERVE=/path/to/mamba
        the pairs compare that broker with this one instead, no stalled
        frames (the hot path before and after a change).
Run it from a directory on the disk to measure (data directories go to the
system's temporary directory).
"""
import json, os, shutil, signal, socket, statistics, struct, subprocess, sys, tempfile, time

RELEASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release")
PORT = 19400
STALLED = 16


def hold(host, port, count=STALLED, frame_bytes=64 << 20):
    body_bytes = 16
    header = struct.pack("<IHHIHHII8x", frame_bytes - 4, 6, 0, 1000, 0, 0,
                         body_bytes, frame_bytes - 32 - body_bytes)
    socks = []
    for _ in range(count):
        s = socket.create_connection((host, port))
        s.sendall(header)
        socks.append(s)
    print(f"holding {count} stalled frames of {frame_bytes} bytes ({count * 32} bytes sent)", flush=True)

    def report(*_):
        still_open = 0
        for s in socks:
            s.setblocking(False)
            try:
                s.recv(1)  # an answer (timeout) before the close: still open
                still_open += 1
            except BlockingIOError:
                still_open += 1
            except OSError:
                pass
        print(f"still open at the end: {still_open}/{count}", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, report)
    signal.signal(signal.SIGINT, report)
    while True:
        time.sleep(3600)


def wait_for_port():
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the broker did not come up")


def run(duration_s, extra, stalled, serve_binary):
    data = tempfile.mkdtemp(prefix="mamba-stalled-")
    serve = subprocess.Popen([serve_binary, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{PORT}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    holder = None
    try:
        wait_for_port()
        if stalled:
            holder = subprocess.Popen([sys.executable, os.path.abspath(__file__), "hold", "127.0.0.1", str(PORT)],
                                      stdout=subprocess.PIPE, text=True)
            holder.stdout.readline()
            time.sleep(0.5)  # the broker reads the headers
        out = subprocess.run([os.path.join(RELEASE, "mamba-bench"), "produce", "--brokers", f"127.0.0.1:{PORT}",
                              "--duration-s", duration_s, "--warmup-s", "2", "--output", "json", *extra],
                             capture_output=True, text=True, check=True).stdout
        report = json.loads(out)
        still_open = ""
        if holder:
            holder.send_signal(signal.SIGTERM)
            still_open = holder.stdout.read().strip()
            holder.wait()
        produce = report["produce"]
        # The broker's CPU time per MB produced (warm-up included on both
        # sides): steadier than throughput on a shared machine.
        with open(f"/proc/{serve.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        cpu_us_per_mb = cpu_s * 1e6 / (produce["bytes_per_s"] * float(duration_s) / 1e6)
        return produce["bytes_per_s"], produce["latency_us"]["p99"], report["errors"], still_open, cpu_us_per_mb
    finally:
        if holder and holder.poll() is None:
            holder.kill()
            holder.wait()
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
        shutil.rmtree(data)


def pairs(count=5, duration_s="10", extra=()):
    this = os.path.join(RELEASE, "mamba")
    base = os.environ.get("BASE_SERVE")
    names = ("base broker", "this broker") if base else ("clean", f"{STALLED} stalled")
    ratios, cpu_ratios = [], []
    for i in range(count):
        reference = lambda: run(duration_s, extra, False, base or this)
        measured = lambda: run(duration_s, extra, not base, this)
        # Every other pair runs in the other order: a run goes slower after
        # the previous one's data directory (gigabytes) was deleted.
        if i % 2 == 0:
            first = reference()
            second = measured()
        else:
            second = measured()
            first = reference()
        ratio, cpu_ratio = second[0] / first[0], second[4] / first[4]
        ratios.append(ratio)
        cpu_ratios.append(cpu_ratio)
        print(f"pair {i + 1}: {names[0]} {first[0] / 1e6:.0f} MB/s p99 {first[1]} us errors {first[2]} "
              f"broker {first[4]:.0f} cpu-us/MB | {names[1]} {second[0] / 1e6:.0f} MB/s p99 {second[1]} us "
              f"errors {second[2]} broker {second[4]:.0f} cpu-us/MB {second[3]} | "
              f"throughput ratio {ratio:.3f}, broker cpu ratio {cpu_ratio:.3f}", flush=True)
    print(f"median throughput ratio {statistics.median(ratios):.3f} (per pair {', '.join(f'{r:.3f}' for r in ratios)})")
    print(f"median broker cpu per MB ratio {statistics.median(cpu_ratios):.3f} "
          f"(per pair {', '.join(f'{r:.3f}' for r in cpu_ratios)})")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "hold":
        hold(sys.argv[2], int(sys.argv[3]), *map(int, sys.argv[4:6]))
    elif len(sys.argv) >= 2 and sys.argv[1] == "pairs":
        pairs(int(sys.argv[2]) if len(sys.argv) > 2 else 5, sys.argv[3] if len(sys.argv) > 3 else "10", sys.argv[4:])
    else:
        sys.exit(__doc__)
