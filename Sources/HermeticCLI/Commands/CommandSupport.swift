import ArgumentParser
import Hermetic

#if canImport(Glibc)
    import Glibc
#endif

/// Runs a command body, turning a `HermeticError` into one `error:` line on stderr and exit status 1.
func reportingErrors(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as any HermeticError {
        writeStandardError("error: \(error.description)\n")
        throw ExitCode(1)
    }
}

func writeStandardError(_ text: String) {
    var bytes = Array(text.utf8)
    bytes.withUnsafeMutableBytes { buffer in
        _ = write(2, buffer.baseAddress, buffer.count)
    }
}
