import Foundation
import Hermetic

#if canImport(Glibc)
    import Glibc
#endif

/// A hostile registry for tests: a small Python `http.server` that serves a one-layer image and misbehaves
/// in one chosen way. It writes `{"port":…,"manifest":"sha256:…"}` when it listens, and logs every path it
/// is asked for, so a test can show what was never fetched.
public final class HostileRegistry {
    public enum Misbehaviour: String, CaseIterable, Sendable {
        /// The pinned manifest's bytes are not the ones its digest names.
        case manifestDigestMismatch = "manifest-digest"
        /// The layer's bytes are not the ones its digest names (same size).
        case layerDigestMismatch = "layer-digest"
        /// The layer's body stops halfway, its Content-Length promising the whole.
        case truncatedBody = "truncated"
        /// The layer's Content-Length is not the descriptor's size.
        case lyingContentLength = "content-length"
        /// The manifest is 5 MiB, streamed without a Content-Length.
        case oversizedManifest = "oversized"
        /// Every request is answered 401, also after the token the challenge asks for.
        case unauthorizedLoop = "401-loop"
        /// The manifest redirects to itself forever.
        case redirectLoop = "redirect-loop"
        /// The layer's headers come, then nothing.
        case stall = "stall"
        /// The manifest names a foreign layer by URL (on this server), which the registry does not hold.
        case foreignLayer = "foreign"
        /// The layer is always answered 503 Service Unavailable.
        case unavailable = "unavailable"
    }

    public let port: Int
    public let manifest: Digest
    /// The size of the image's one layer (a tar holding `hello.txt`).
    public let layerSize: Int
    private let server: PythonServer
    public var directory: TemporaryDirectory { server.directory }

    public var host: String { "127.0.0.1:\(port)" }

    public convenience init(_ misbehaviour: Misbehaviour) throws {
        try self.init(mode: misbehaviour.rawValue)
    }

    /// A registry that behaves, but asks for a Bearer token (its token service gives one for the Basic
    /// credentials `tester:t0ken-pa55` only) and redirects blob fetches to another origin (`localhost`).
    public static func tokenRegistry() throws -> HostileRegistry { try HostileRegistry(mode: "bearer") }

    /// A registry that cuts the layer's body in half unless it is asked for a Range, which it serves (206).
    public static func resumableRegistry() throws -> HostileRegistry { try HostileRegistry(mode: "resume") }

    /// A registry that behaves, but answers the layer's first two requests 429 and 503.
    public static func flakyRegistry() throws -> HostileRegistry { try HostileRegistry(mode: "flaky") }

    private init(mode: String) throws {
        let directory = try TemporaryDirectory(prefix: "hermetic-hostile-registry-")
        server = try PythonServer(
            script: Self.script, name: "hostile-registry.py", arguments: [mode, directory.path], directory: directory)
        port = try server.readyNumber("port")
        manifest = try Digest(parsing: try server.readyText("manifest"))
        layerSize = try server.readyNumber("layerSize")
    }

    /// The paths the server was asked for, in order, each followed by ` authorized` when the request carried
    /// an Authorization header and by ` range=…` when it asked for a Range.
    public var requestedPaths: [String] { server.requestLog }

    static let script = #"""
        import base64, hashlib, io, json, os, socket, sys, tarfile, threading, time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        mode, directory = sys.argv[1], sys.argv[2]
        def digest(b): return "sha256:" + hashlib.sha256(b).hexdigest()
        # One file, hello.txt, in a plain tar (fixed mtime and owner: the same bytes every run).
        def make_layer():
            out = io.BytesIO()
            with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                data = bytes(range(256)) * 32
                info = tarfile.TarInfo("hello.txt")
                info.size, info.mtime, info.mode = len(data), 1600000000, 0o644
                tar.addfile(info, io.BytesIO(data))
            return out.getvalue()
        layer = make_layer()
        credentials = "Basic " + base64.b64encode(b"tester:t0ken-pa55").decode()
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [digest(layer)]}}).encode()
        server = ThreadingHTTPServer(("127.0.0.1", 0), None)
        port = server.server_address[1]
        layer_descriptor = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(layer), "size": len(layer)}
        if mode == "foreign":
            layer_descriptor = {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": digest(layer), "size": len(layer), "urls": ["http://127.0.0.1:%d/foreign-layer" % port]}
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
            "layers": [layer_descriptor]}).encode()
        blobs = {digest(config): config}
        if mode != "foreign": blobs[digest(layer)] = layer
        log = open(os.path.join(directory, "requests.log"), "a", buffering=1)
        lock, attempts = threading.Lock(), [0]

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *args): pass
            def send(self, code, body=b"", headers=None, length=None):
                self.send_response(code)
                for k, v in (headers or {}).items(): self.send_header(k, v)
                if length is not False: self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                return body
            def do_GET(self):
                log.write(self.path + (" authorized" if self.headers.get("Authorization") else "")
                    + (" range=" + self.headers["Range"] if self.headers.get("Range") else "") + "\n")
                path = self.path.split("?")[0]
                if mode == "bearer":
                    self.bearer(path)
                    return
                if mode == "401-loop" and path != "/token":
                    realm = "http://127.0.0.1:%d/token" % port
                    self.wfile.write(self.send(401, b"{}", {"WWW-Authenticate": 'Bearer realm="%s",service="hostile"' % realm}))
                    return
                if path == "/token":
                    self.wfile.write(self.send(200, b'{"token":"t0ken"}', {"Content-Type": "application/json"}))
                    return
                if path == "/v2/":
                    self.wfile.write(self.send(200, b"{}"))
                    return
                if path.startswith("/v2/hostile/manifests/"):
                    if mode == "redirect-loop":
                        self.wfile.write(self.send(302, b"", {"Location": self.path}))
                        return
                    if mode == "oversized":
                        self.send(200, headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json", "Connection": "close"}, length=False)
                        self.close_connection = True
                        chunk = b" " * 65536
                        try:
                            for _ in range(80): self.wfile.write(chunk)
                        except Exception: pass
                        return
                    body = manifest
                    if mode == "manifest-digest": body = manifest.replace(b'"schemaVersion": 2', b'"schemaVersion": 2 ')
                    self.wfile.write(self.send(200, body, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}))
                    return
                if path.startswith("/v2/hostile/blobs/"):
                    wanted = path.rsplit("/", 1)[1]
                    body = blobs.get(wanted)
                    if body is None:
                        self.wfile.write(self.send(404, b"{}"))
                        return
                    if body is layer and mode == "unavailable":
                        self.wfile.write(self.send(503, b"{}"))
                        return
                    if body is layer and mode == "resume":
                        wanted_range = self.headers.get("Range", "")
                        if wanted_range.startswith("bytes=") and wanted_range.endswith("-"):
                            start = int(wanted_range[6:-1])
                            headers = {"Content-Range": "bytes %d-%d/%d" % (start, len(body) - 1, len(body))}
                            self.wfile.write(self.send(206, body[start:], headers))
                            return
                        self.send(200, headers={"Connection": "close"}, length=len(body))
                        self.wfile.write(body[: len(body) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    if body is layer and mode == "flaky":
                        with lock:
                            attempts[0] += 1
                            attempt = attempts[0]
                        if attempt <= 2:
                            self.wfile.write(self.send(429 if attempt == 1 else 503, b"{}"))
                            return
                    if body is layer and mode == "layer-digest": body = bytes(reversed(layer))
                    if body is layer and mode == "content-length":
                        self.wfile.write(self.send(200, body, length=len(body) + 100))
                        self.close_connection = True
                        return
                    if body is layer and mode == "truncated":
                        self.send(200, headers={"Connection": "close"}, length=len(body))
                        self.wfile.write(body[: len(body) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    if body is layer and mode == "stall":
                        self.send(200, length=len(body))
                        self.wfile.flush()
                        time.sleep(60)
                        return
                    self.wfile.write(self.send(200, body))
                    return
                self.wfile.write(self.send(404, b"{}"))

            # A registry that asks for a Bearer token (given for tester's Basic credentials only) and keeps its
            # blobs on another origin (localhost, not 127.0.0.1), which must never see the Authorization header.
            def bearer(self, path):
                challenge = {"WWW-Authenticate": 'Bearer realm="http://127.0.0.1:%d/token",service="fake"' % port}
                authorization = self.headers.get("Authorization")
                if path == "/token":
                    if authorization != credentials:
                        self.wfile.write(self.send(401, b"{}"))
                        return
                    self.wfile.write(self.send(200, b'{"access_token":"t0ken"}'))
                    return
                if path.startswith("/storage/"):
                    body = blobs.get(path.rsplit("/", 1)[1])
                    if authorization is not None or body is None:
                        self.wfile.write(self.send(400, b"{}"))
                        return
                    self.wfile.write(self.send(200, body))
                    return
                if authorization != "Bearer t0ken":
                    self.wfile.write(self.send(401, b"{}", challenge))
                    return
                if path == "/v2/":
                    self.wfile.write(self.send(200, b"{}"))
                elif path.startswith("/v2/hostile/manifests/"):
                    self.wfile.write(self.send(200, manifest, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}))
                elif path.startswith("/v2/hostile/blobs/"):
                    target = "http://localhost:%d/storage/%s" % (port, path.rsplit("/", 1)[1])
                    self.wfile.write(self.send(307, b"", {"Location": target}))
                else:
                    self.wfile.write(self.send(404, b"{}"))

        server.RequestHandlerClass = Handler
        with open(os.path.join(directory, "ready.tmp"), "w") as f:
            json.dump({"port": str(port), "manifest": digest(manifest), "layerSize": str(len(layer))}, f)
        os.rename(os.path.join(directory, "ready.tmp"), os.path.join(directory, "ready.json"))
        server.serve_forever()
        """#
}
