import Foundation
import Hermetic

#if canImport(Glibc)
    import Glibc
#endif

/// A token service for `docker-registry`'s `auth: token` (the Bearer flow of docker's token
/// specification): a small Python `http.server` on a loopback port, with an RSA key and a self-signed
/// certificate `openssl` makes on the spot. `GET /token?service=…&scope=…` checks the Basic credentials (none
/// is anonymous) and answers a JWT signed RS256 whose `access` holds only the actions of each scope the user
/// is granted (as docker's token servers do: the intersection, never an error for asking more). The token's
/// header carries the certificate (`x5c`), which the registry verifies against its `rootcertbundle`.
/// Every request is logged (scopes, whether it carried an Authorization header, the answer and the token)
/// for the test to read. Stopped (by its pid) when the fixture goes away.
public final class TokenService {
    /// A user: the password, and the actions granted on each repository (`*` for every repository).
    public struct User: Sendable {
        public var password: String
        public var grants: [String: [String]]
        public init(password: String, grants: [String: [String]]) {
            self.password = password
            self.grants = grants
        }
    }

    /// One request the service answered, as it logged it.
    public struct Request: Decodable, Sendable {
        public var path: String
        /// The `scope` query parameters, as sent.
        public var scopes: [String]
        /// Whether it carried an Authorization header.
        public var authorization: Bool
        public var status: Int
        public var user: String?
        public var userAgent: String?
        /// The token it answered with (200 only).
        public var token: String?
        /// The scopes the token grants, `repository:NAME:ACTIONS`.
        public var granted: [String]?

        enum CodingKeys: String, CodingKey {
            case path, scopes, authorization, status, user, token, granted
            case userAgent = "user_agent"
        }
    }

    public let port: Int
    private let server: PythonServer
    public var directory: TemporaryDirectory { server.directory }
    public let issuer = "hermetic-test-token-issuer"
    public let service = "hermetic-test-registry"

    /// Where the registry sends clients for a token.
    public var realm: String { "http://127.0.0.1:\(port)/token" }
    /// The certificate whose key signs the tokens (PEM): the registry's `rootcertbundle`.
    public var certificate: String { directory.path + "/token.pem" }

    /// The `auth:` section of a `docker-registry` configuration that takes this service's tokens.
    public var registryConfiguration: String {
        """
        auth:
          token:
            realm: \(realm)
            service: \(service)
            issuer: \(issuer)
            rootcertbundle: \(certificate)

        """
    }

    /// Starts a token service for `users`; `anonymous` grants what a request without credentials gets.
    public init(users: [String: User], anonymous: [String: [String]] = [:]) throws {
        let openssl = try ExternalTools.require("openssl")
        let directory = try TemporaryDirectory(prefix: "hermetic-token-service-")
        let made = try HermeticProcess.run(
            openssl,
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", directory.path + "/token.key", "-out",
                directory.path + "/token.pem", "-days", "2", "-subj", "/CN=hermetic test token issuer",
            ])
        guard made.status == 0 else {
            throw ExternalTools.Failure(description: "openssl req failed: \(made.standardError)")
        }
        let configuration: [String: Any] = [
            "issuer": issuer, "service": service, "openssl": openssl,
            "users": users.mapValues { ["password": $0.password, "grants": $0.grants] as [String: Any] },
            "anonymous": anonymous,
        ]
        try JSONSerialization.data(withJSONObject: configuration).write(
            to: URL(fileURLWithPath: directory.path + "/token-config.json"))
        server = try PythonServer(
            script: Self.script, name: "token-service.py", arguments: [directory.path],
            readyFile: "token-ready.json", directory: directory)
        port = try server.readyNumber("port")
    }

    /// The requests answered so far, oldest first.
    public func requests() throws -> [Request] {
        let path = directory.path + "/token-requests.jsonl"
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        return try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            try JSONDecoder().decode(Request.self, from: Data($0.utf8))
        }
    }

    static let script = #"""
        import base64, json, os, subprocess, sys, threading, time, uuid
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlparse, parse_qs

        directory = sys.argv[1]
        with open(directory + "/token-config.json") as f:
            config = json.load(f)
        with open(directory + "/token.pem") as f:
            # The certificate's DER in standard base64 is the PEM's body: the token's x5c chain.
            der = "".join(l for l in f.read().splitlines() if l and not l.startswith("-----"))
        lock = threading.Lock()

        def b64url(data):
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        def sign(claims):
            header = {"typ": "JWT", "alg": "RS256", "x5c": [der]}
            signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
            signature = subprocess.run(
                [config["openssl"], "dgst", "-sha256", "-sign", directory + "/token.key"],
                input=signing_input.encode(), capture_output=True, check=True).stdout
            return signing_input + "." + b64url(signature)

        def log(entry):
            with lock:
                with open(directory + "/token-requests.jsonl", "a") as f:
                    f.write(json.dumps(entry) + "\n")

        def user_of(authorization):
            """The user the Basic credentials name, "" for none, None for wrong ones."""
            if authorization is None:
                return ""
            scheme, _, value = authorization.partition(" ")
            try:
                name, _, password = base64.b64decode(value).decode().partition(":")
            except Exception:
                return None
            known = config["users"].get(name)
            if scheme.lower() != "basic" or known is None or known["password"] != password:
                return None
            return name

        def grant(grants, scopes):
            """The access claim: each scope's actions the grants allow (the intersection)."""
            access = []
            for scope in scopes:
                for item in scope.split(" "):
                    parts = item.split(":")
                    if len(parts) < 3 or parts[0] != "repository":
                        continue
                    name, actions = ":".join(parts[1:-1]), parts[-1].split(",")
                    allowed = grants.get(name, grants.get("*", []))
                    given = [a for a in actions if a in allowed]
                    if given:
                        access.append({"type": "repository", "name": name, "actions": given})
            return access

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, code, body, headers=()):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlparse(self.path)
                query = parse_qs(url.query)
                authorization = self.headers.get("Authorization")
                entry = {"path": url.path, "scopes": query.get("scope", []),
                         "authorization": authorization is not None,
                         "user_agent": self.headers.get("User-Agent")}
                if url.path != "/token" or query.get("service", [None])[0] != config["service"]:
                    entry["status"] = 404
                    log(entry)
                    return self.answer(404, {"errors": [{"code": "NOT_FOUND", "message": "no such service"}]})
                user = user_of(authorization)
                if user is None:
                    entry["status"] = 401
                    log(entry)
                    return self.answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]},
                                       [("WWW-Authenticate", 'Basic realm="hermetic-test-token"')])
                grants = config["users"][user]["grants"] if user else config["anonymous"]
                access = grant(grants, entry["scopes"])
                now = int(time.time())
                claims = {"iss": config["issuer"], "sub": user, "aud": config["service"], "exp": now + 300,
                          "nbf": now - 10, "iat": now, "jti": str(uuid.uuid4()), "access": access}
                token = sign(claims)
                entry.update(status=200, user=user or None, token=token,
                             granted=["repository:%s:%s" % (a["name"], ",".join(a["actions"])) for a in access])
                log(entry)
                self.answer(200, {"token": token, "access_token": token, "expires_in": 300,
                                  "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))})

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        with open(directory + "/token-ready.tmp", "w") as f:
            json.dump({"port": server.server_address[1]}, f)
        os.rename(directory + "/token-ready.tmp", directory + "/token-ready.json")
        server.serve_forever()
        """#
}
