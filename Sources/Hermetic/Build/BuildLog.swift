#if canImport(Glibc)
    import Glibc
#endif

/// Progress and warnings for a person, on stderr. `quiet` keeps only warnings.
public struct BuildLog: Sendable {
    public var mode: ProgressMode
    public init(mode: ProgressMode) { self.mode = mode }

    public func step(_ text: String) {
        guard mode != .quiet else { return }
        emit("#\(text)\n")
    }

    public func warning(_ text: String) {
        emit("warning: \(text)\n")
    }

    private func emit(_ text: String) {
        var bytes = Array(text.utf8)
        bytes.withUnsafeMutableBytes { buffer in
            _ = write(2, buffer.baseAddress, buffer.count)
        }
    }
}
