"""A demo web app for the supervisor: serves on the listening socket the agent hands it
(systemd socket activation: descriptor 3, LISTEN_FDS, LISTEN_PID), so every replica accepts on
one port and the kernel spreads the connections. It also answers on its own $PORT, if set (for
per-replica health checks and /stats); without a socket it serves on $PORT only.

GET /      some work (a few ms of CPU), then "replica N pid P"
GET /stats {"replica": N, "pid": P, "served": requests served by this replica}
Standard library only.
"""
import hashlib
import http.server
import json
import os
import signal
import socket
import threading

REPLICA = os.environ.get("REPLICA", "0")
served = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global served
        if self.path == "/stats":
            body = json.dumps({"replica": int(REPLICA), "pid": os.getpid(), "served": served})
        else:
            served += 1
            digest = b"x"
            for _ in range(2000):  # a little CPU per request, so load shows as utilization
                digest = hashlib.sha256(digest).digest()
            body = f"replica {REPLICA} pid {os.getpid()}"
        data = (body + "\n").encode()
        self.send_response(200)
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
    if own is not None:
        threading.Thread(target=own.serve_forever, daemon=True).start()
    # A graceful stop: finish the request in hand, accept no more (queued connections stay in
    # the shared socket for the other replicas), then exit.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"replica {REPLICA} serving on {server.socket.getsockname()}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
