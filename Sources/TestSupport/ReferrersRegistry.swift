import Foundation
import Hermetic

#if canImport(Glibc)
    import Glibc
#endif

/// A registry with the OCI 1.1 referrers API, for tests (Debian's `docker-registry` 2.8 has none): a small
/// Python `http.server` that serves, read-only, an OCI layout `hermetic build` wrote — its image under the
/// tag `v1` of any repository, every blob by digest (manifests with their media type), and
/// `GET /v2/NAME/referrers/DIGEST` as the image index of the layout's referrers whose `subject` is DIGEST,
/// one entry per page with a `Link: <…>; rel="next"` header to the next. It answers 404 for every referrers
/// tag (`sha256-…`), and logs every path it is asked for.
public final class ReferrersRegistry {
    public enum Behaviour: String, Sendable {
        /// Serves every blob as the layout holds it.
        case faithful
        /// Serves the statement and envelope blobs of attestation referrers with one byte changed (same size).
        case tamperedStatements = "tampered"
    }

    public let port: Int
    private let server: PythonServer
    public var directory: TemporaryDirectory { server.directory }

    public var host: String { "127.0.0.1:\(port)" }

    public init(layout: String, behaviour: Behaviour = .faithful) throws {
        let directory = try TemporaryDirectory(prefix: "hermetic-referrers-registry-")
        server = try PythonServer(
            script: Self.script, name: "referrers-registry.py",
            arguments: [layout, behaviour.rawValue, directory.path],
            directory: directory)
        port = try server.readyNumber("port")
    }

    /// The paths (with their query) the server was asked for, in order.
    public var requestedPaths: [String] { server.requestLog }

    static let script = #"""
        import json, os, re, sys
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        layout, behaviour, directory = sys.argv[1], sys.argv[2], sys.argv[3]
        def blob(digest):
            with open(os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1]), "rb") as f: return f.read()
        index = json.load(open(os.path.join(layout, "index.json")))
        top = index["manifests"][0]
        types, referrers, statements = {top["digest"]: top["mediaType"]}, {}, set()
        for entry in index["manifests"][1:]:
            manifest = json.loads(blob(entry["digest"]))
            types[entry["digest"]] = entry["mediaType"]
            subject = manifest.get("subject", {}).get("digest")
            if subject is None: continue
            listed = {k: entry[k] for k in ("mediaType", "digest", "size")}
            listed["artifactType"] = manifest.get("artifactType", manifest["config"]["mediaType"])
            if "annotations" in manifest: listed["annotations"] = manifest["annotations"]
            referrers.setdefault(subject, []).append(listed)
            statements.update(layer["digest"] for layer in manifest["layers"])
        if top["mediaType"].endswith("index.v1+json"):
            for entry in json.loads(blob(top["digest"]))["manifests"]: types[entry["digest"]] = entry["mediaType"]
        log = open(os.path.join(directory, "requests.log"), "a", buffering=1)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *args): pass
            def answer(self, code, body=b"", headers=None):
                self.send_response(code)
                for k, v in (headers or {}).items(): self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command == "GET": self.wfile.write(body)
            def do_HEAD(self): self.do_GET()
            def do_GET(self):
                log.write(self.path + "\n")
                path, _, query = self.path.partition("?")
                if path == "/v2/": return self.answer(200, b"{}")
                m = re.fullmatch(r"/v2/(.+)/(manifests|blobs|referrers)/([^/]+)", path)
                if not m: return self.answer(404)
                name, kind, ref = m.groups()
                if kind == "referrers":
                    listed = referrers.get(ref, [])
                    page = int(query.split("page=")[1]) if "page=" in query else 0
                    body = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                            "manifests": listed[page:page + 1]}
                    headers = {"Content-Type": "application/vnd.oci.image.index.v1+json"}
                    if page + 1 < len(listed):
                        headers["Link"] = '</v2/%s/referrers/%s?page=%d>; rel="next"' % (name, ref, page + 1)
                    return self.answer(200, json.dumps(body).encode(), headers)
                if kind == "manifests" and ref == "v1": ref = top["digest"]
                if not ref.startswith("sha256:"): return self.answer(404)
                try: data = blob(ref)
                except OSError: return self.answer(404)
                if behaviour == "tampered" and ref in statements:
                    data = data[:-2] + bytes([data[-2] ^ 1]) + data[-1:]
                headers = {"Docker-Content-Digest": ref}
                if kind == "manifests": headers["Content-Type"] = types.get(ref, "application/vnd.oci.image.manifest.v1+json")
                self.answer(200, data, headers)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        with open(os.path.join(directory, "ready.tmp"), "w") as f: json.dump({"port": server.server_address[1]}, f)
        os.rename(os.path.join(directory, "ready.tmp"), os.path.join(directory, "ready.json"))
        server.serve_forever()
        """#
}
