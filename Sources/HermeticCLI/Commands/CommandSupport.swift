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
        writeErrorLine(error.description)
        throw ExitCode(1)
    } catch let error as any ProvenanceError {
        writeErrorLine(error.description)
        throw ExitCode(1)
    } catch let error as ExitCode {
        throw error
    } catch {
        // Anything else still gets one line: never a trace, never a partial message.
        writeErrorLine("\(error)")
        throw ExitCode(1)
    }
}

/// `error: TEXT` as exactly one line: control characters in TEXT (a newline in a flag's value, in a
/// Dockerfile word, in a base image's config) are shown escaped, never as a line break.
func writeErrorLine(_ text: String) {
    writeStandardError("error: \(escapedForOneLine(text))\n")
}

func escapedForOneLine(_ text: String) -> String {
    var result = ""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        case _ where scalar.value < 0x20 || scalar.value == 0x7f:
            result += "\\x" + (scalar.value < 0x10 ? "0" : "") + String(scalar.value, radix: 16)
        default: result.unicodeScalars.append(scalar)
        }
    }
    return result
}

func writeStandardError(_ text: String) {
    var bytes = Array(text.utf8)
    bytes.withUnsafeMutableBytes { buffer in
        _ = write(2, buffer.baseAddress, buffer.count)
    }
}

/// `--platform` values: comma-separated `os/arch[/variant]` entries, each checked (`Platform(parsing:)`).
func parsePlatforms(_ values: [String]) throws(ArgumentError) -> [String] {
    var platforms: [String] = []
    for text in values {
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let trimmed = part.trimmingCharacters(in: .whitespaces)
            do {
                _ = try Platform(parsing: trimmed)
            } catch {
                let reason = (error as? Platform.ParseError)?.reason ?? "\(error)"
                throw ArgumentError(
                    argument: "--platform", value: text, reason: part == text ? reason : "\"\(part)\": \(reason)")
            }
            platforms.append(trimmed)
        }
    }
    return platforms
}
