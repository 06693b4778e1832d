import Testing

@testable import Hermetic

/// Platform parsing, normalisation, which content serves a request and what runs natively, against
/// containerd's platforms package (Parse, normalizeArch, Only) as SPEC §2 (Platforms) states it.
@Suite struct PlatformRulesTests {
    func parsed(_ text: String) throws -> String { try Platform(parsing: text).description }

    @Test func parsingNormalisesAsContainerd() throws {
        #expect(try parsed("Linux/AARCH64") == "linux/arm64")
        #expect(try parsed("linux/arm64/v8") == "linux/arm64")
        #expect(try parsed("linux/arm64/8") == "linux/arm64")
        #expect(try parsed("linux/arm64/9.0") == "linux/arm64/v9")
        #expect(try parsed("linux/x86_64/v1") == "linux/amd64")
        #expect(try parsed("linux/amd64/v3") == "linux/amd64/v3")
        #expect(try parsed("linux/i386") == "linux/386")
        #expect(try parsed("linux/arm") == "linux/arm/v7")
        #expect(try parsed("linux/armel") == "linux/arm/v6")
        #expect(try parsed("linux/arm/6") == "linux/arm/v6")
        #expect(try parsed("armhf") == "linux/arm/v7")
        #expect(try parsed("s390x") == "linux/s390x")
        #expect(try parsed("macos/arm64") == "darwin/arm64")
        #expect(try parsed("linux") == Platform.host.description)
        #expect(try parsed("linux/riscv64/rva22u64") == "linux/riscv64/rva22u64")
    }

    @Test(arguments: [
        "", "garbage", "linux/", "/amd64", "linux/garbage", "plan10/amd64", "linux/amd64/v5", "linux/arm/v9",
        "linux/arm64/v8.10", "linux/amd64/v2/x", "linux/amd64 ", "linux(10.0)/amd64", "linux/*",
    ])
    func malformedIsRefused(text: String) {
        #expect(throws: Platform.ParseError.self) { try Platform(parsing: text) }
    }

    func serves(_ content: String, _ requested: String) throws -> Bool {
        let parts = content.split(separator: "/").map(String.init)
        let platform = Platform(os: parts[0], architecture: parts[1], variant: parts.count > 2 ? parts[2] : nil)
        return platform.serves(try Platform(parsing: requested))
    }

    @Test func contentServesTheSameArchitectureAtOrBelowTheRequestedVariant() throws {
        #expect(try serves("linux/amd64", "linux/amd64/v3"))
        #expect(try serves("linux/amd64/v2", "linux/amd64/v3"))
        #expect(try !serves("linux/amd64/v3", "linux/amd64"))
        #expect(try !serves("linux/386", "linux/amd64"))
        #expect(try serves("linux/arm/v6", "linux/arm/v7"))
        #expect(try !serves("linux/arm/v7", "linux/arm/v6"))
        #expect(try serves("linux/arm", "linux/arm/v6"))  // no stated variant: not judged on it
        #expect(try !serves("linux/arm/v8", "linux/arm64"))
        #expect(try serves("linux/aarch64/v8", "linux/arm64"))
        #expect(try serves("linux/arm64/v8.1", "linux/arm64/v8.2"))
        #expect(try !serves("linux/arm64/v8.2", "linux/arm64"))
        #expect(try serves("linux/arm64/v8.5", "linux/arm64/v9"))
        #expect(try !serves("linux/arm64/v8.6", "linux/arm64/v9"))
        #expect(try serves("linux/x86_64", "linux/amd64"))
        #expect(try !serves("windows/amd64", "linux/amd64"))
    }

    @Test func hostRunsItsArchitectureAndItsThirtyTwoBitOne() throws {
        let amd64 = Platform(os: "linux", architecture: "amd64")
        let arm64 = Platform(os: "linux", architecture: "arm64")
        #expect(try Platform(parsing: "linux/amd64/v3").runsNatively(on: amd64))
        #expect(try Platform(parsing: "linux/386").runsNatively(on: amd64))
        #expect(try !Platform(parsing: "linux/arm64").runsNatively(on: amd64))
        #expect(try !Platform(parsing: "windows/amd64").runsNatively(on: amd64))
        #expect(try Platform(parsing: "linux/arm/v7").runsNatively(on: arm64))
        #expect(try !Platform(parsing: "linux/amd64").runsNatively(on: arm64))
        #expect(try !Platform(parsing: "linux/s390x").runsNatively(on: amd64))
    }
}
