import Foundation
import Hermetic

#if canImport(Glibc)
    import Glibc
#endif

/// A registry to push to, for the paths Debian's `docker-registry` never takes: a small Python
/// `http.server` that keeps blobs, uploads and manifests in memory, checks every blob against its digest,
/// and behaves in one chosen way. A second server, the "storage", listens on every address (`0.0.0.0`)
/// and takes uploads when the registry sends them there. Every request is logged (`requestLog`).
public final class PushRegistry {
    public enum Mode: String, Sendable {
        /// Monolithic and chunked uploads as the spec says; no referrers API.
        case plain
        /// The referrers API: a manifest with a `subject` is answered with `OCI-Subject` and listed by
        /// `GET /v2/NAME/referrers/DIGEST`.
        case referrers
        /// Asks for Basic credentials (`tester:t0ken-pa55`) and answers each upload's POST with a
        /// `Location` on the storage server, at `storageHost`.
        case storage
        /// Keeps half of the second chunk (`PATCH`) and drops the connection without an answer; the
        /// upload's status (`GET LOCATION`) then says what it holds.
        case chunkDrop = "chunk-drop"
        /// Answers the `PUT` that closes an upload 201 with a `Docker-Content-Digest` that is not the blob's.
        case digestLie = "digest-lie"
        /// Answers an upload's POST 202 without a `Location`.
        case noLocation = "no-location"
        /// Answers the upload's `PUT` and `PATCH` 307 to themselves.
        case redirectLoop = "redirect-loop"
        /// Answers the second chunk 202 with `Range: 0-99`, before the first chunk's end.
        case rangeBackwards = "range-backwards"
        /// Answers an upload's POST with `OCI-Chunk-Min-Length: 20971520` (20 MiB).
        case chunkMinimum = "chunk-min"
        /// Holds each upload's closing `PUT` half a second before it answers, and writes the most closing
        /// `PUT`s it held at once to `most-at-once` (uploads one after another never make it more than 1).
        case slowClose = "slow-close"
    }

    public let port: Int
    public let storagePort: Int
    private let server: PythonServer
    public var directory: TemporaryDirectory { server.directory }

    public var host: String { "127.0.0.1:\(port)" }

    /// `storageHost`: the address the storage server's `Location`s name (it listens on all of them), or
    /// `HOST:PORT` to name another port (where nothing may listen).
    public init(_ mode: Mode, storageHost: String = "127.0.0.1") throws {
        let directory = try TemporaryDirectory(prefix: "hermetic-push-registry-")
        server = try PythonServer(
            script: Self.script, name: "push-registry.py", arguments: [mode.rawValue, directory.path, storageHost],
            directory: directory)
        port = try server.readyNumber("port")
        storagePort = try server.readyNumber("storagePort")
    }

    /// One line per request, in order: `[storage ]METHOD PATH?QUERY`, then ` authorized` when it carried an
    /// Authorization header, ` content-range=…` and ` length=N` (the body's bytes received).
    public var requestLog: [String] { server.requestLog }

    /// The tags the registry holds for `repository`.
    public func tags(_ repository: String) -> [String] {
        requestLog.filter { $0.hasPrefix("tagged \(repository):") }.map {
            String($0.dropFirst("tagged \(repository):".count))
        }
    }

    /// The first IPv4 address of this machine that is not on the loopback network (nil if it has none).
    public static func nonLoopbackAddress() -> String? {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return nil }
        defer { freeifaddrs(list) }
        var next = list
        while let entry = next {
            defer { next = entry.pointee.ifa_next }
            guard let address = entry.pointee.ifa_addr, address.pointee.sa_family == sa_family_t(AF_INET) else {
                continue
            }
            var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            let ip = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
            var copy = ip
            guard inet_ntop(AF_INET, &copy, &text, socklen_t(text.count)) != nil else { continue }
            let shown = String(cString: text)
            if !shown.hasPrefix("127.") { return shown }
        }
        return nil
    }

    static let script = #"""
        import base64, hashlib, json, os, socket, sys, threading, time, uuid
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        mode, directory, storage_host = sys.argv[1], sys.argv[2], sys.argv[3]
        def digest(b): return "sha256:" + hashlib.sha256(b).hexdigest()
        credentials = "Basic " + base64.b64encode(b"tester:t0ken-pa55").decode()
        INDEX = "application/vnd.oci.image.index.v1+json"
        lock = threading.Lock()
        blobs, uploads, manifests, tags, referrers = {}, {}, {}, {}, {}
        patches = [0]
        held = [0, 0]  # closing PUTs held now, most at once
        log = open(os.path.join(directory, "requests.log"), "a", buffering=1)
        registry = ThreadingHTTPServer(("127.0.0.1", 0), None)
        storage = ThreadingHTTPServer(("0.0.0.0", 0), None)
        port, storage_port = registry.server_address[1], storage.server_address[1]

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            prefix = ""
            def log_message(self, *args): pass
            def answer(self, code, body=b"", headers=None):
                self.send_response(code)
                for k, v in (headers or {}).items(): self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD": self.wfile.write(body)
            def body(self, limit=None):
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length if limit is None else min(limit, length))
            def note(self, received):
                line = self.prefix + self.command + " " + self.path
                if self.headers.get("Authorization"): line += " authorized"
                if self.headers.get("Content-Range"): line += " content-range=" + self.headers["Content-Range"]
                if received is not None: line += " length=%d" % len(received)
                log.write(line + "\n")
            def handle_any(self):
                received = None
                if self.command in ("PUT", "PATCH", "POST"):
                    if mode == "chunk-drop" and self.command == "PATCH":
                        with lock:
                            patches[0] += 1
                            number = patches[0]
                        if number == 2:
                            # Half of this chunk arrives; then the connection drops, unanswered.
                            half = self.body(int(self.headers["Content-Length"]) // 2)
                            with lock: uploads[self.path.split("?")[0].rsplit("/", 1)[1]] += half
                            self.note(half)
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                    received = self.body()
                self.note(received)
                self.route(received or b"")
            do_GET = do_HEAD = do_PUT = do_PATCH = do_POST = do_DELETE = handle_any

            def route(self, received):
                path, _, query = self.path.partition("?")
                params = dict(p.partition("=")[::2] for p in query.split("&") if p)
                if mode == "storage" and self.prefix == "" and self.headers.get("Authorization") != credentials:
                    self.answer(401, b"{}", {"WWW-Authenticate": 'Basic realm="fake"'})
                    return
                if path == "/v2/":
                    self.answer(200, b"{}")
                    return
                if path.startswith("/upload/"):
                    self.upload(path, path.rsplit("/", 1)[1], params, received)
                    return
                name, kind, rest = self.split(path)
                if kind == "blobs" and rest == "uploads/":
                    self.start(name)
                elif kind == "blobs" and rest.startswith("uploads/"):
                    self.upload(path, rest.split("/", 1)[1], params, received)
                elif kind == "blobs":
                    body = blobs.get(rest)
                    if body is None: self.answer(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
                    else: self.answer(200, body, {"Docker-Content-Digest": rest})
                elif kind == "manifests" and self.command == "PUT":
                    self.put_manifest(name, rest, received)
                elif kind == "manifests":
                    key = tags.get((name, rest), rest)
                    if key not in manifests:
                        self.answer(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
                        return
                    body, media = manifests[key]
                    self.answer(200, body, {"Content-Type": media, "Docker-Content-Digest": key})
                elif kind == "referrers" and mode == "referrers":
                    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": referrers.get((name, rest), [])}
                    self.answer(200, json.dumps(index).encode(), {"Content-Type": INDEX})
                else:
                    self.answer(404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}')

            def split(self, path):
                # /v2/NAME/(blobs|manifests|referrers)/REST, NAME holding slashes.
                inner = path[len("/v2/"):]
                for kind in ("/blobs/", "/manifests/", "/referrers/"):
                    if kind in inner:
                        name, rest = inner.split(kind, 1)
                        return name, kind.strip("/"), rest
                return inner, "", ""

            def start(self, name):
                session = uuid.uuid4().hex
                with lock: uploads[session] = bytearray()
                if mode == "no-location":
                    self.answer(202, b"")
                    return
                location = "/v2/%s/blobs/uploads/%s" % (name, session)
                if mode == "storage":
                    where = storage_host if ":" in storage_host else "%s:%d" % (storage_host, storage_port)
                    location = "http://%s/upload/%s" % (where, session)
                headers = {"Location": location, "Range": "0-0"}
                if mode == "chunk-min": headers["OCI-Chunk-Min-Length"] = str(20 << 20)
                self.answer(202, b"", headers)

            def upload(self, path, session, params, received):
                if session not in uploads:
                    self.answer(404, b'{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN"}]}')
                    return
                if mode == "redirect-loop" and self.command in ("PUT", "PATCH"):
                    self.answer(307, b"", {"Location": self.path})
                    return
                data = uploads[session]
                if self.command == "GET":
                    self.answer(204, b"", {"Location": path, "Range": "0-%d" % max(len(data) - 1, 0)})
                    return
                if self.command == "PATCH":
                    start = int(self.headers.get("Content-Range", "0-0").split("-")[0])
                    if start != len(data):
                        self.answer(416, b'{"errors":[{"code":"BLOB_UPLOAD_INVALID"}]}')
                        return
                    data += received
                    end = len(data) - 1
                    if mode == "range-backwards" and start > 0: end = 99
                    self.answer(202, b"", {"Location": path, "Range": "0-%d" % end})
                    return
                if self.command == "PUT" and mode == "slow-close":
                    with lock:
                        held[0] += 1
                        held[1] = max(held)
                        with open(os.path.join(directory, "most-at-once"), "w") as f: f.write(str(held[1]))
                    time.sleep(0.5)
                    with lock: held[0] -= 1
                if self.command == "PUT":
                    data += received
                    wanted = params.get("digest", "").replace("%3A", ":")
                    if digest(bytes(data)) != wanted:
                        self.answer(400, b'{"errors":[{"code":"DIGEST_INVALID","message":"digest does not match"}]}')
                        return
                    stated = wanted
                    if mode == "digest-lie": stated = "sha256:" + "0" * 64
                    else:
                        with lock: blobs[wanted] = bytes(data)
                    self.answer(201, b"", {"Location": "/v2/blobs/" + wanted, "Docker-Content-Digest": stated})
                    return
                self.answer(405, b"{}")

            def put_manifest(self, name, reference, received):
                key = digest(received)
                media = self.headers.get("Content-Type", "")
                headers = {"Location": "/v2/%s/manifests/%s" % (name, key), "Docker-Content-Digest": key}
                try: parsed = json.loads(received)
                except ValueError: parsed = {}
                with lock:
                    manifests[key] = (received, media)
                    if not reference.startswith("sha256:"):
                        tags[(name, reference)] = key
                        log.write("tagged %s:%s\n" % (name, reference))
                    subject = parsed.get("subject") if isinstance(parsed, dict) else None
                    if mode == "referrers" and subject:
                        entry = {"mediaType": media, "digest": key, "size": len(received)}
                        if parsed.get("artifactType"): entry["artifactType"] = parsed["artifactType"]
                        if parsed.get("annotations"): entry["annotations"] = parsed["annotations"]
                        listed = referrers.setdefault((name, subject["digest"]), [])
                        if all(e["digest"] != key for e in listed): listed.append(entry)
                        headers["OCI-Subject"] = subject["digest"]
                self.answer(201, b"", headers)

        class StorageHandler(Handler):
            prefix = "storage "

        registry.RequestHandlerClass, storage.RequestHandlerClass = Handler, StorageHandler
        threading.Thread(target=storage.serve_forever, daemon=True).start()
        with open(os.path.join(directory, "ready.tmp"), "w") as f:
            json.dump({"port": port, "storagePort": storage_port}, f)
        os.rename(os.path.join(directory, "ready.tmp"), os.path.join(directory, "ready.json"))
        registry.serve_forever()
        """#
}
