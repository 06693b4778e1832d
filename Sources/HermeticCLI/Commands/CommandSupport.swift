import ArgumentParser
import Hermetic
import Provenance

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
    } catch let error as any ProvenanceError {
        writeStandardError("error: \(error.description)\n")
        throw ExitCode(1)
    } catch let error as ExitCode {
        throw error
    } catch {
        // Anything else still gets one line: never a trace, never a partial message.
        let text = "\(error)".split(separator: "\n").first.map(String.init) ?? "unexpected error"
        writeStandardError("error: \(text)\n")
        throw ExitCode(1)
    }
}

func writeStandardError(_ text: String) {
    var bytes = Array(text.utf8)
    bytes.withUnsafeMutableBytes { buffer in
        _ = write(2, buffer.baseAddress, buffer.count)
    }
}
