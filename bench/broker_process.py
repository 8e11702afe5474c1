"""One `mamba serve` process for the bench scripts: started in a data
directory, waited for until ready, its log drained, stopped by SIGTERM."""
import os, re, resource, signal, subprocess, threading

MAMBA = os.path.abspath("target/release/mamba")


def raise_file_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))


def start(data, port, many_files=False):
    """Returns the process and its HTTP address once it logs ready."""
    p = subprocess.Popen([MAMBA, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}"],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                         preexec_fn=raise_file_limit if many_files else None,
                         env=dict(os.environ, RUST_LOG="warn,mamba=info"))
    for line in p.stderr:
        if "mamba broker ready" in line:
            # Keep reading its log, or the broker blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, re.search(r"http=(\S+)", line).group(1)
    raise SystemExit("broker exited before ready")


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=300)
