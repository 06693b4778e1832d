import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// What a RUN step writes to stdout and stderr reaches the person through a pipe, never the builder's own
/// descriptors: a step could otherwise reopen them through `/proc/self/fd/N` and truncate the builder's log
/// file or change its terminal's settings. On the way, every `--secret` value is replaced by `****`, so a
/// step that prints one does not put it in a log.
final class StepOutputRelay: @unchecked Sendable {
    /// The end the step writes to (stdout and stderr).
    let writeEnd: Int32
    private let readEnd: Int32
    private let log: BuildLog?
    private let secrets: [[UInt8]]
    private let toTerminal: Bool
    private let finished = DispatchSemaphore(value: 0)
    /// The last byte shown (only the relay thread touches it).
    private var lastShown: UInt8?

    static let mask = Array("****".utf8)

    /// `log` nil: the output is read and dropped (`--progress quiet`).
    init(log: BuildLog?, secrets: [[UInt8]]) throws {
        var fds: [Int32] = [-1, -1]
        // pipe2 is not in Swift's Glibc; the sandbox child closes every descriptor above 2 anyway.
        guard pipe(&fds) == 0 else { throw SystemError("pipe", path: "RUN output", errno: errno) }
        readEnd = fds[0]
        writeEnd = fds[1]
        _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(writeEnd, F_SETFD, FD_CLOEXEC)
        self.log = log
        toTerminal = log != nil && isatty(2) == 1
        // Longest first, so a secret that contains another is masked whole.
        self.secrets = secrets.filter { !$0.isEmpty }.sorted { $0.count > $1.count }
        let thread = Thread { [self] in
            relay()
            finished.signal()
        }
        thread.start()
    }

    /// Call once the step and every process in it are gone: closes the write end and waits for the rest.
    func finish() {
        close(writeEnd)
        finished.wait()
        close(readEnd)
    }

    private func relay() {
        let keep = max((secrets.first?.count ?? 1) - 1, 0)
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(readEnd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            pending += buffer[0..<count]
            pending = Self.redact(pending, secrets)
            // Hold back what could be the start of a secret split across reads.
            if pending.count > keep {
                emit(Array(pending[0..<(pending.count - keep)]))
                pending.removeFirst(pending.count - keep)
            }
        }
        emit(pending)
        // What the builder prints next (progress, its error line) starts on a line of its own.
        if let lastShown, lastShown != UInt8(ascii: "\n") { emit([UInt8(ascii: "\n")]) }
    }

    private func emit(_ raw: [UInt8]) {
        guard let log, !raw.isEmpty else { return }
        // On a terminal, a step's escape sequences would drive it (retitle it, clear it, write the clipboard
        // with OSC 52, fake our own progress lines): ESC is shown as `^[` there.
        let bytes = toTerminal ? Self.neutralizingEscapes(raw) : raw
        lastShown = bytes.last
        log.stepOutput(bytes)
    }

    static func neutralizingEscapes(_ bytes: [UInt8]) -> [UInt8] {
        guard bytes.contains(0x1b) else { return bytes }
        var result: [UInt8] = []
        result.reserveCapacity(bytes.count + 8)
        for byte in bytes {
            if byte == 0x1b { result += [UInt8(ascii: "^"), UInt8(ascii: "[")] } else { result.append(byte) }
        }
        return result
    }

    /// Every occurrence of each secret replaced by the mask.
    static func redact(_ text: [UInt8], _ secrets: [[UInt8]]) -> [UInt8] {
        guard !secrets.isEmpty else { return text }
        var result: [UInt8] = []
        result.reserveCapacity(text.count)
        var index = 0
        scan: while index < text.count {
            for secret in secrets where text.count - index >= secret.count && text[index] == secret[0] {
                if text[index..<(index + secret.count)].elementsEqual(secret) {
                    result += mask
                    index += secret.count
                    continue scan
                }
            }
            result.append(text[index])
            index += 1
        }
        return result
    }
}
