import Foundation
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
        // docker-image:// is a registry reference, normalized as docker does; a malformed one is refused.
        #expect(
            try NamedContext.parse("x=docker-image://alpine@\(digest)").context
                == .dockerImage(
                    RegistryReference(
                        registry: "docker.io", repository: "library/alpine", digest: try Digest(parsing: digest))))
        #expect(
            try NamedContext.parse("x=docker-image://127.0.0.1:5000/a/b:1").context
                == .dockerImage(RegistryReference(registry: "127.0.0.1:5000", repository: "a/b", tag: "1")))
        #expect(throws: ArgumentError.self) { try NamedContext.parse("x=docker-image://Alpine") }
        #expect(throws: ArgumentError.self) { try NamedContext.parse("x=docker-image://alpine@sha256:../../etc") }
        #expect(throws: ArgumentError.self) { try NamedContext.parse("x=oci-layout://relative") }
        #expect(throws: ArgumentError.self) { try NamedContext.parse("x=oci-layout:///p@sha256:../../etc") }
        #expect(throws: ArgumentError.self) { try NamedContext.parse("=dir") }
        #expect(throws: ArgumentError.self) { try NamedContext.parse("novalue") }
    }

    @Test func buildArgsFromTheEnvironment() throws {
        #expect(try BuildArg.parse("A=b=c", environment: [:]) == BuildArg(name: "A", value: "b=c"))
        #expect(try BuildArg.parse("TOKEN", environment: ["TOKEN": "t"]) == BuildArg(name: "TOKEN", value: "t"))
        // As buildx: a name alone that the environment lacks passes nothing.
        #expect(try BuildArg.parse("MISSING", environment: [:]) == nil)
        #expect(try BuildArg.parse("EMPTY=", environment: [:]) == BuildArg(name: "EMPTY", value: ""))
        #expect(throws: ArgumentError.self) { try BuildArg.parse("=x", environment: [:]) }
        #expect(throws: ArgumentError.self) { try BuildArg.parse("A B", environment: [:]) }
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

    /// Go's time.ParseDuration on (some of) Go's own test vectors.
    static let durationRows: [(String, Int64?)] = [
        ("0", 0), ("5s", 5_000_000_000), ("30s", 30_000_000_000), ("-5s", -5_000_000_000), ("+5s", 5_000_000_000),
        ("-0", 0), ("+0", 0), ("5.6s", 5_600_000_000), ("5.s", 5_000_000_000), (".5s", 500_000_000),
        ("1.004s", 1_004_000_000), ("100.00100s", 100_001_000_000), ("10ns", 10), ("11us", 11_000),
        ("12\u{B5}s", 12_000), ("12\u{3BC}s", 12_000), ("13ms", 13_000_000), ("15m", 900_000_000_000),
        ("16h", 57_600_000_000_000), ("3h30m", 12_600_000_000_000), ("10.5s4m", 250_500_000_000),
        ("-2m3.4s", -123_400_000_000), ("1h2m3s4ms5us6ns", 3_723_004_005_006), ("1.5h", 5_400_000_000_000),
        ("0.3333333333333333333h", 1_200_000_000_000), ("9223372036854775807ns", Int64.max),
        ("9223372036854775.807us", Int64.max), ("-9223372036854775808ns", Int64.min),
        ("0.830103483285477580700h", 2_988_372_539_827),
        ("", nil), ("3", nil), ("10", nil), ("-", nil), ("s", nil), (".", nil), ("-.", nil), (".s", nil),
        ("+.s", nil), ("1d", nil), ("1sx", nil), ("9223372036854775808ns", nil), ("-9223372036854775809ns", nil),
        ("abc", nil),
    ]

    @Test(arguments: durationRows.indices)
    func goDurations(row: Int) {
        let (text, nanoseconds) = Self.durationRows[row]
        #expect(GoDuration.nanoseconds(text) == nanoseconds, "\(text)")
    }

    /// BuildKit's parseHealthcheck: 0 means unset (left out of the config), anything else under 1ms is refused,
    /// retries are never negative; its messages.
    @Test func healthcheckValues() throws {
        func convert(_ interval: String? = nil, retries: String? = nil) throws -> HealthConfig {
            try HealthcheckConversion.config(
                HealthcheckInstruction(
                    command: .exec(["/check"]), interval: interval, timeout: "0s", startPeriod: "",
                    startInterval: nil, retries: retries), shell: nil, line: 7, file: "D")
        }
        let zero = try convert("0", retries: "0")
        #expect(zero.interval == nil && zero.timeout == nil && zero.startPeriod == nil && zero.retries == nil)
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        #expect(String(decoding: try encoder.encode(zero), as: UTF8.self) == #"{"Test":["CMD","\/check"]}"#)
        #expect(try convert("1ms", retries: "3").interval == 1_000_000)
        func message(_ interval: String?, retries: String? = nil) -> String {
            do {
                _ = try convert(interval, retries: retries)
                return "accepted"
            } catch {
                return "\(error)"
            }
        }
        #expect(message("999us") == #"D:7: Interval "interval" cannot be less than 1ms"#)
        #expect(message("-1s") == #"D:7: Interval "interval" cannot be less than 1ms"#)
        #expect(message("10") == #"D:7: time: missing unit in duration "10""#)
        #expect(message("1x") == #"D:7: time: unknown unit "x" in duration "1x""#)
        #expect(message("x") == #"D:7: time: invalid duration "x""#)
        #expect(message(nil, retries: "-1") == "D:7: --retries cannot be negative (-1)")
        #expect(message(nil, retries: "x") == #"D:7: strconv.ParseInt: parsing "x": invalid syntax"#)
        #expect(
            message(nil, retries: "9999999999") == #"D:7: strconv.ParseInt: parsing "9999999999": value out of range"#)
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
