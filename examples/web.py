"""A demo web app for the supervisor: serves on the listening socket the agent hands it
(systemd socket activation: descriptor 3, LISTEN_FDS, LISTEN_PID), so every replica accepts on
one port and the kernel spreads the connections. It also answers on its own $PORT, if set (for
per-replica health checks and /stats); without a socket it serves on $PORT only.

GET /      some work (a few ms of CPU), then "replica N pid P"
GET /stats {"replica": N, "pid": P, "served": requests served by this replica, "busy": …, "draining": …}
GET /busy  work in flight: requests being served plus background jobs (0 = idle), for the
           agent's [process.busy] probe, which asks it before a scale-in picks which replica goes
POST /job?seconds=S  starts a background job of S seconds (say, a report being generated)
POST /job/finish     ends this replica's jobs now
POST /drain, /undrain  stop / resume taking connections from the shared socket ([process.drain])
Standard library only.
"""
import hashlib
import http.server
import json
import os
import signal
import socket
import threading
import time
import urllib.parse

REPLICA = os.environ.get("REPLICA", "0")
served = 0
in_flight = 0  # requests being served and background jobs running
draining = False
lock = threading.Lock()
shared = None  # the server on the shared socket, when there is one
finish = threading.Event()  # set: the jobs running end now


def busy(delta):
    global in_flight
    with lock:
        in_flight += delta


def job(seconds):
    try:
        finish.wait(seconds)
    finally:
        busy(-1)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global served
        if self.path == "/stats":
            body = json.dumps({"replica": int(REPLICA), "pid": os.getpid(), "served": served,
                               "busy": in_flight, "draining": draining})
        elif self.path == "/busy":
            body = str(in_flight)
        else:
            busy(1)
            try:
                served += 1
                digest = b"x"
                for _ in range(2000):  # a little CPU per request, so load shows as utilization
                    digest = hashlib.sha256(digest).digest()
                body = f"replica {REPLICA} pid {os.getpid()}"
            finally:
                busy(-1)
        self.answer(200, body)

    def do_POST(self):
        global draining
        url = urllib.parse.urlparse(self.path)
        if url.path == "/job/finish":
            finish.set()
            time.sleep(0.05)
            finish.clear()
            self.answer(200, "jobs finished")
        elif url.path == "/job":
            seconds = float(urllib.parse.parse_qs(url.query).get("seconds", ["60"])[0])
            busy(1)
            threading.Thread(target=job, args=(seconds,), daemon=True).start()
            self.answer(200, f"job of {seconds} s started")
        elif url.path == "/drain":
            if shared is not None and not draining:
                draining = True
                threading.Thread(target=shared.shutdown).start()
            print(f"replica {REPLICA} draining: no new connections", flush=True)
            self.answer(200, "draining")
        elif url.path == "/undrain":
            if shared is not None and draining:
                draining = False
                threading.Thread(target=shared.serve_forever, daemon=True).start()
            print(f"replica {REPLICA} serving again", flush=True)
            self.answer(200, "serving")
        else:
            self.answer(404, "no such path")

    def answer(self, status, body):
        data = (body + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # no access log: the agent keeps output for `agent logs`
        pass


def inherited_socket():
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0")) < 1:
        return None
    return socket.socket(fileno=3)


def main():
    sock = inherited_socket()
    own = None
    if "PORT" in os.environ:
        own = http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    if sock is None:
        server, own = own, None
    else:
        server = http.server.HTTPServer(sock.getsockname(), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
    global shared
    shared = server if own is not None else None
    if own is not None:
        threading.Thread(target=own.serve_forever, daemon=True).start()
    # A graceful stop: finish the request in hand, accept no more (queued connections stay in
    # the shared socket for the other replicas), then exit.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=lambda: (server.shutdown(), stop.set())).start())
    print(f"replica {REPLICA} serving on {server.socket.getsockname()}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop.wait()


if __name__ == "__main__":
    main()
