import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `--progress tty`: buildx's live view, redrawn in place on the terminal. Each drawing moves the cursor
/// back to the top of the previous one and rewrites every line, clearing what is left; lines are cut to the
/// terminal's width (a wrapped line would throw the count off) and only the last rows that fit are drawn.
final class TerminalProgressView: @unchecked Sendable {
    struct Row {
        var text: String
        /// Seconds, shown right-aligned (buildx's `0.3s`).
        var timer: Double?
    }

    struct Screen {
        var rows: [Row]
    }

    private let descriptor: Int32
    private var linesDrawn = 0
    private let tickerLock = NSLock()
    private var ticking = true

    init(descriptor: Int32) {
        self.descriptor = descriptor
    }

    /// Calls `tick` every 100 ms (the running timers) until `stop`.
    func startTicking(_ tick: @escaping @Sendable () -> Void) {
        let thread = Thread { [self] in
            while tickerLock.withLock({ ticking }) {
                usleep(100_000)
                tick()
            }
        }
        thread.start()
    }

    func stop() {
        tickerLock.withLock { ticking = false }
    }

    /// A line of text (a warning) put above the view, which is drawn again below it.
    func printAbove(_ text: String, screen: Screen) {
        var bytes = cursorToTop()
        bytes += Array("\u{1b}[J".utf8) + Array(text.utf8)
        linesDrawn = 0
        Self.writeAll(descriptor, bytes)
        draw(screen)
    }

    func draw(_ screen: Screen) {
        let (width, height) = size()
        var rows = screen.rows
        // The header and the last rows that fit: the cursor cannot move above the top of the screen.
        if rows.count > height - 1, height > 2 {
            rows = [rows[0]] + rows.suffix(height - 2)
        }
        var bytes = cursorToTop()
        for row in rows {
            bytes += Array(Self.line(row, width: width).utf8) + Array("\u{1b}[K\n".utf8)
        }
        bytes += Array("\u{1b}[J".utf8)
        linesDrawn = rows.count
        Self.writeAll(descriptor, bytes)
    }

    private func cursorToTop() -> [UInt8] {
        linesDrawn > 0 ? Array("\u{1b}[\(linesDrawn)A\r".utf8) : Array("\r".utf8)
    }

    /// One row in `width - 1` columns (the last column would wrap on some terminals), its timer at the right.
    static func line(_ row: Row, width: Int) -> String {
        let usable = max(width - 1, 10)
        guard let timer = row.timer else { return String(row.text.prefix(usable)) }
        let time = ProgressClock.seconds(timer)
        let room = usable - time.count - 1
        guard room > 0 else { return String(row.text.prefix(usable)) }
        let text = row.text.count > room ? String(row.text.prefix(room - 1)) + "…" : row.text
        return text + String(repeating: " ", count: room - text.count + 1) + time
    }

    private func size() -> (width: Int, height: Int) {
        var window = winsize()
        guard ioctl(descriptor, UInt(TIOCGWINSZ), &window) == 0, window.ws_col > 0, window.ws_row > 0 else {
            return (80, 24)
        }
        return (Int(window.ws_col), Int(window.ws_row))
    }

    static func writeAll(_ descriptor: Int32, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = write(descriptor, raw.baseAddress! + offset, raw.count - offset)
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { return }
                offset += written
            }
        }
    }
}
