/// A secret value must never reach anything a build writes. After a build, each output text (configs,
/// history, statements) is searched for each `--secret` value; a hit fails the build, naming only the id.
struct SecretTaint {
    var secrets: [String: SecretSource]
    var environment: [String: String]
    /// Shorter values are too likely to appear by chance (e.g. "1") to judge.
    static let minimumLength = 4

    struct TaintError: HermeticError {
        var id: String
        var place: String
        var description: String { "the value of secret \(id) appears in \(place); refusing to write it" }
    }

    func values() -> [(id: String, value: [UInt8])] {
        secrets.keys.sorted().compactMap { id in
            let value: [UInt8]?
            switch secrets[id] {
            case .file(let path)?: value = try? FileSystem.readFile(path, limit: 1 << 20)
            case .environment(let variable)?: value = environment[variable].map { Array($0.utf8) }
            case nil: value = nil
            }
            // A trailing newline (as `echo x > file` leaves) is not part of what leaks.
            guard var value else { return nil }
            while let last = value.last, last == 0x0a || last == 0x0d { value.removeLast() }
            guard value.count >= Self.minimumLength else { return nil }
            return (id, value)
        }
    }

    func check(_ outputs: [(String, [UInt8])]) throws {
        for (id, value) in values() {
            for (place, bytes) in outputs where Self.contains(bytes, value) {
                throw TaintError(id: id, place: place)
            }
        }
    }

    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, haystack.count >= needle.count else { return false }
        let first = needle[0]
        var index = 0
        while index <= haystack.count - needle.count {
            if haystack[index] == first, Array(haystack[index..<(index + needle.count)]) == needle { return true }
            index += 1
        }
        return false
    }
}

/// Watches a stream (a layer's tar as it is written) for any secret value, across chunk boundaries.
final class SecretStreamScanner: @unchecked Sendable {
    private let secrets: [(id: String, value: [UInt8])]
    private let keep: Int
    private var tail: [UInt8] = []
    private(set) var found: String?

    init(_ secrets: [(id: String, value: [UInt8])]) {
        self.secrets = secrets
        keep = max((secrets.map(\.value.count).max() ?? 1) - 1, 0)
    }

    func consume(_ buffer: UnsafeRawBufferPointer) {
        guard found == nil, !secrets.isEmpty else { return }
        // Only the bytes a match could span: the last `keep` bytes seen before, and this chunk.
        let window = tail + Array(buffer)
        for secret in secrets where SecretTaint.contains(window, secret.value) {
            found = secret.id
            return
        }
        tail = window.count > keep ? Array(window[(window.count - keep)...]) : window
    }
}
