"""A TLS-only HTTP/1.1 server for the external-service tests:
`python3 tls_http_server.py ADDR PORT CERT KEY NAME` answers every GET with
200 and body NAME, and prints a ready line."""
import http.server
import ssl
import sys


def main():
    addr, port, cert, key, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    body = (name + "\n").encode()

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd = http.server.ThreadingHTTPServer((addr, port), H)
    httpd.daemon_threads = True
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    print("tls_http_server ready", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
