import Testing

@testable import Hermetic

@Suite struct BuildOptionsTests {
    @Test func outputForms() throws {
        #expect(try OutputSpec(parsing: "type=oci,dest=/x") == .ociDirectory("/x"))
        #expect(try OutputSpec(parsing: "type=oci,dest=/x.tar") == .ociArchive("/x.tar"))
        #expect(try OutputSpec(parsing: "type=oci,dest=/x,tar=true") == .ociArchive("/x"))
        #expect(try OutputSpec(parsing: "type=docker,dest=/img.tar") == .dockerArchive("/img.tar"))
        #expect(try OutputSpec(parsing: "type=local,dest=out") == .local("out"))
        #expect(try OutputSpec(parsing: "out-dir") == .local("out-dir"))
    }

    @Test(arguments: [
        "type=registry,dest=x", "type=oci", "dest=x", "type=oci,dest=", "type=oci,dest=x,bogus=1",
        "type=oci,dest=x,dest=y", "type=oci,dest=x,tar=maybe", "-", "", "type=local,dest=x,tar=true", "typo",
    ])
    func badOutputsNameTheFlag(text: String) {
        if text == "typo" { return }  // a bare path is a valid local output
        #expect {
            try OutputSpec(parsing: text)
        } throws: { error in
            (error as? ArgumentError)?.description.hasPrefix("--output \"\(text)\": ") == true
        }
    }

    @Test func namedContexts() throws {
        let digest = "sha256:" + String(repeating: "ab", count: 32)
        let (name, context) = try NamedContext.parse("base=oci-layout:///srv/layout:v1@\(digest)")
        #expect(name == "base")
        #expect(context == .ociLayout(path: "/srv/layout", tag: "v1", digest: try Digest(parsing: digest)))
        #expect(
            try NamedContext.parse("b=oci-layout:///a/b").context == .ociLayout(path: "/a/b", tag: nil, digest: nil))
        #expect(try NamedContext.parse("dir=./files").context == .directory("./files"))
        #expect(throws: ArgumentError.self) { try NamedContext.parse("x=docker-image://alpine") }
        #expect(throws: ArgumentError.self) { try NamedContext.parse("x=oci-layout://relative") }
        #expect(throws: ArgumentError.self) { try NamedContext.parse("x=oci-layout:///p@sha256:../../etc") }
        #expect(throws: ArgumentError.self) { try NamedContext.parse("=dir") }
        #expect(throws: ArgumentError.self) { try NamedContext.parse("novalue") }
    }

    @Test func buildArgsFromTheEnvironment() throws {
        #expect(try BuildArg(parsing: "A=b=c", environment: [:]) == BuildArg(name: "A", value: "b=c"))
        #expect(try BuildArg(parsing: "TOKEN", environment: ["TOKEN": "t"]) == BuildArg(name: "TOKEN", value: "t"))
        #expect(throws: ArgumentError.self) { try BuildArg(parsing: "MISSING", environment: [:]) }
        #expect(throws: ArgumentError.self) { try BuildArg(parsing: "=x", environment: [:]) }
    }

    @Test func sourceDateEpoch() throws {
        #expect(try SourceDateEpoch.resolve(flag: nil, environment: [:]) == 0)
        #expect(
            try SourceDateEpoch.resolve(flag: nil, environment: ["SOURCE_DATE_EPOCH": "1700000000"]) == 1_700_000_000)
        #expect(try SourceDateEpoch.resolve(flag: "5", environment: ["SOURCE_DATE_EPOCH": "9"]) == 5)
        #expect(throws: ArgumentError.self) { try SourceDateEpoch.resolve(flag: "-1", environment: [:]) }
        #expect(throws: ArgumentError.self) { try SourceDateEpoch.resolve(flag: "1e9", environment: [:]) }
    }

    @Test func timestampsIgnoreTheTimeZone() {
        #expect(RFC3339.format(0) == "1970-01-01T00:00:00Z")
        #expect(RFC3339.format(1_700_000_000) == "2023-11-14T22:13:20Z")
    }

    @Test func goDurations() {
        #expect(GoDuration.nanoseconds("30s") == 30_000_000_000)
        #expect(GoDuration.nanoseconds("1m30s") == 90_000_000_000)
        #expect(GoDuration.nanoseconds("1.5h") == 5_400_000_000_000)
        #expect(GoDuration.nanoseconds("500ms") == 500_000_000)
        #expect(GoDuration.nanoseconds("0") == 0)
        #expect(GoDuration.nanoseconds("10") == nil)
        #expect(GoDuration.nanoseconds("abc") == nil)
        #expect(GoDuration.nanoseconds("") == nil)
    }

    /// BuildKit's convert_expose.go on its own test vectors (convert_expose_test.go) and more: the result
    /// or the exact error.
    static let portRows: [(String, [String]?, String?)] = [
        ("80", ["80/tcp"], nil),
        ("080", ["80/tcp"], nil),
        ("53/UDP", ["53/udp"], nil),
        ("1234/", ["1234/tcp"], nil),
        ("8000-8002/tcp", ["8000/tcp", "8001/tcp", "8002/tcp"], nil),
        ("8080:80", ["80/tcp"], nil),
        (":80", ["80/tcp"], nil),
        ("127.0.0.1:8080:80/udp", ["80/udp"], nil),
        ("0.0.0.0:1234-1235:3333-3334/tcp", ["3333/tcp", "3334/tcp"], nil),
        ("1234-1236:1234-1236/sctp", ["1234/sctp", "1235/sctp", "1236/sctp"], nil),
        ("8000-9000:80", ["80/tcp"], nil),
        ("[2001:4860:0:2001::68]::333", ["333/tcp"], nil),
        ("[::1]:80:80", ["80/tcp"], nil),
        ("2001:4860:0:2001::68::333", ["333/tcp"], nil),
        ("::1:80:80", ["80/tcp"], nil),
        ("::::80", ["80/tcp"], nil),
        ("localhost:1234:1234/tcp", nil, "invalid IP address: localhost"),
        ("01.2.3.4:80:80", nil, "invalid IP address: 01.2.3.4"),
        ("[::1:80:80", nil, "invalid IP address [::1: address [::1:: missing ']' in address"),
        ("99999", nil, "invalid containerPort: 99999"),
        ("9-1", nil, "invalid containerPort: 9-1"),
        ("1-2-3", nil, "invalid containerPort: 1-2-3"),
        ("+80", nil, "invalid containerPort: +80"),
        ("x:80", nil, "invalid hostPort: x"),
        ("80-81:90-92", nil, "invalid ranges specified for container and host Ports: 90-92 and 80-81"),
        ("80/icmp", nil, "invalid proto: icmp"),
        ("80/tcp/x", nil, "invalid proto: tcp/x"),
        ("/tcp", nil, "no port specified: /tcp<empty>"),
    ]

    @Test(arguments: portRows.indices)
    func exposedPorts(row: Int) {
        let (spec, ports, message) = Self.portRows[row]
        do {
            let result = try PortSpec.expand(spec, line: 3, file: "D")
            #expect(result == ports, "\(spec)")
        } catch {
            #expect("\(error)" == "D:3: \(message ?? "no error")", "\(spec)")
        }
    }

    /// BuildKit splits each EXPOSE argument into words after expanding it.
    @Test func exposeArgumentsAreSplitAfterExpansion() throws {
        let parsed = try DockerfileParser.parse(Array("FROM scratch\nEXPOSE $P 9/udp\n".utf8), file: "D")
        let expanded = try parsed.instructions[1].expanded(
            lookup: { $0 == "P" ? "80 81/udp" : nil }, lexer: ShellLexer(escape: "\\"), file: "D")
        guard case .expose(let ports) = expanded.kind else {
            Issue.record("not EXPOSE: \(expanded.kind)")
            return
        }
        #expect(ports == ["80", "81/udp", "9/udp"])
    }

    @Test func workdirJoining() {
        #expect(StageExecutor.joinWorkdir(nil, "app") == "/app")
        #expect(StageExecutor.joinWorkdir("/app", "sub/../x") == "/app/x")
        #expect(StageExecutor.joinWorkdir("/app", "/abs") == "/abs")
        #expect(StageExecutor.joinWorkdir("/", "../../..") == "/")
    }
}
