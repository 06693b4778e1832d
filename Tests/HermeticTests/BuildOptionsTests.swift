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

    @Test func exposedPorts() throws {
        #expect(try PortSpec.expand("80", line: 1, file: "D") == ["80/tcp"])
        #expect(try PortSpec.expand("53/UDP", line: 1, file: "D") == ["53/udp"])
        #expect(try PortSpec.expand("8000-8002/tcp", line: 1, file: "D") == ["8000/tcp", "8001/tcp", "8002/tcp"])
        #expect(throws: DockerfileError.self) { try PortSpec.expand("99999", line: 1, file: "D") }
        #expect(throws: DockerfileError.self) { try PortSpec.expand("80/icmp", line: 1, file: "D") }
        #expect(throws: DockerfileError.self) { try PortSpec.expand("9-1", line: 1, file: "D") }
    }

    @Test func workdirJoining() {
        #expect(StageExecutor.joinWorkdir(nil, "app") == "/app")
        #expect(StageExecutor.joinWorkdir("/app", "sub/../x") == "/app/x")
        #expect(StageExecutor.joinWorkdir("/app", "/abs") == "/abs")
        #expect(StageExecutor.joinWorkdir("/", "../../..") == "/")
    }
}
