import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Progress and warnings for a person, on stderr, in buildx's forms (SPEC §5): `plain` text, a live `tty`
/// view, or `quiet` (warnings only). Copies share one display: steps run one at a time, and a step's output
/// arrives from its relay thread.
public struct BuildLog: Sendable {
    /// Never `auto`: that is resolved when the log is made.
    public let mode: ProgressMode
    private let display: ProgressDisplay

    /// `auto` is `tty` when stderr is a terminal, else `plain`, as buildx chooses.
    public init(mode: ProgressMode) {
        let resolved: ProgressMode = mode == .auto ? (isatty(2) == 1 ? .tty : .plain) : mode
        self.mode = resolved
        display = ProgressDisplay(mode: resolved)
    }

    /// How many steps the build will run (the tty view's total).
    func expectSteps(_ count: Int) { display.expect(count) }

    /// A step begins (the previous one has ended); `name` is buildx's `[PLATFORM STAGE I/N] INSTRUCTION`.
    func startStep(_ name: String) { display.start(name) }

    /// The step that began last has ended well.
    func endStep() { display.end() }

    /// The step that began last was found in the build cache: buildx's `#N CACHED`.
    func cachedStep() { display.markCached() }

    /// What a RUN step wrote (already masked), as it comes.
    func stepOutput(_ bytes: [UInt8]) { display.output(bytes) }

    /// Whether a step's output is shown at all.
    var showsStepOutput: Bool { mode != .quiet }

    public func warning(_ text: String) {
        display.message("warning: \(text)\n")
    }

    /// The build is over: a step still running failed with `error` (one line); the tty view draws its last
    /// screen. Call it before the error line is printed.
    public func finish(error: String?) { display.finish(error: error) }
}

/// The shared state behind `BuildLog`; every call takes the lock, since a step's output comes from its
/// relay thread and the tty view is redrawn by a timer thread.
final class ProgressDisplay: @unchecked Sendable {
    private let mode: ProgressMode
    private let lock = NSLock()
    private var steps: [ProgressStep] = []
    private var expected = 0
    private let started = ProgressClock.now()
    private var view: TerminalProgressView?
    private var finished = false

    init(mode: ProgressMode) {
        self.mode = mode
    }

    func expect(_ count: Int) {
        lock.withLock { expected = count }
    }

    func start(_ name: String) {
        lock.withLock {
            endCurrent(failed: nil)
            steps.append(ProgressStep(name: name, started: ProgressClock.now()))
            switch mode {
            case .plain: write("#\(steps.count) \(name)\n")
            case .tty: startViewIfNeeded()
            default: break
            }
        }
        redraw()
    }

    func end() {
        lock.withLock { endCurrent(failed: nil) }
        redraw()
    }

    func markCached() {
        lock.withLock {
            guard let last = steps.indices.last, steps[last].ended == nil else { return }
            steps[last].cached = true
        }
    }

    func output(_ bytes: [UInt8]) {
        lock.withLock {
            switch mode {
            case .plain: write(bytes)
            case .tty:
                guard !steps.isEmpty else { return }
                steps[steps.count - 1].output.append(bytes)
            default: break
            }
        }
    }

    func message(_ text: String) {
        lock.withLock {
            if let view, !finished {
                view.printAbove(text, screen: screen())
            } else {
                write(text)
            }
        }
    }

    func finish(error: String?) {
        lock.withLock {
            guard !finished else { return }
            endCurrent(failed: error)
            finished = true
            if let view {
                view.stop()
                view.draw(screen(final: true))
            }
        }
    }

    /// Ends the running step, if any; plain mode says how it went (buildx's `#N DONE 0.3s`, `#N ERROR: …`).
    private func endCurrent(failed error: String?) {
        guard let last = steps.indices.last, steps[last].ended == nil else { return }
        steps[last].ended = ProgressClock.now()
        steps[last].failed = error != nil
        guard mode == .plain else { return }
        if let error {
            write("#\(steps.count) ERROR: \(error)\n\n")
        } else if steps[last].cached {
            write("#\(steps.count) CACHED\n\n")
        } else {
            write("#\(steps.count) DONE \(ProgressClock.seconds(steps[last].duration))\n\n")
        }
    }

    private func startViewIfNeeded() {
        guard view == nil else { return }
        let view = TerminalProgressView(descriptor: 2)
        self.view = view
        view.startTicking { [weak self] in self?.redraw() }
    }

    private func redraw() {
        lock.withLock {
            guard let view, !finished else { return }
            view.draw(screen())
        }
    }

    /// The tty view's lines: buildx's header, each step begun with its time, and the last lines of the
    /// running step's output (a step's output collapses when it ends well).
    private func screen(final: Bool = false) -> TerminalProgressView.Screen {
        let now = ProgressClock.now()
        let done = steps.filter { $0.ended != nil && !$0.failed }.count
        let succeeded = final && steps.allSatisfy { !$0.failed } && done == expected
        var header = "[+] Building \(ProgressClock.seconds(now - started)) (\(done)/\(max(expected, steps.count)))"
        if succeeded { header += " FINISHED" }
        var rows: [TerminalProgressView.Row] = [.init(text: header, timer: nil)]
        for step in steps {
            let elapsed = (step.ended ?? now) - step.started
            let state = step.failed ? "ERROR " : step.cached ? "CACHED " : ""
            rows.append(.init(text: " => " + state + step.name, timer: elapsed))
            if step.ended == nil || step.failed {
                for line in step.output.lastLines(6) { rows.append(.init(text: " => => # " + line, timer: nil)) }
            }
        }
        return TerminalProgressView.Screen(rows: rows)
    }

    private func write(_ text: String) { write(Array(text.utf8)) }

    private func write(_ bytes: [UInt8]) {
        TerminalProgressView.writeAll(2, bytes)
    }
}

struct ProgressStep {
    var name: String
    var started: Double
    var ended: Double?
    var failed = false
    var cached = false
    var output = OutputTail()

    var duration: Double { (ended ?? started) - started }
}

/// The last lines of a step's output, for the tty view: control characters (escapes included) shown as
/// `^X`, so a step cannot drive the terminal; at most 64 lines kept.
struct OutputTail {
    private var lines: [String] = []
    private var partial: [UInt8] = []

    mutating func append(_ bytes: [UInt8]) {
        for byte in bytes {
            if byte == UInt8(ascii: "\n") {
                lines.append(Self.shown(partial))
                partial.removeAll()
                if lines.count > 64 { lines.removeFirst(lines.count - 64) }
            } else {
                partial.append(byte)
            }
        }
    }

    func lastLines(_ count: Int) -> [String] {
        let all = partial.isEmpty ? lines : lines + [Self.shown(partial)]
        return Array(all.suffix(count))
    }

    static func shown(_ bytes: [UInt8]) -> String {
        var text: [UInt8] = []
        for byte in bytes where byte != UInt8(ascii: "\r") {
            if byte < 0x20 || byte == 0x7f {
                text += [UInt8(ascii: "^"), byte == 0x7f ? UInt8(ascii: "?") : byte + 0x40]
            } else {
                text.append(byte)
            }
        }
        return String(decoding: text, as: UTF8.self)
    }
}

/// Monotonic seconds, and buildx's one-decimal form of them (`0.3s`).
enum ProgressClock {
    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    static func seconds(_ value: Double) -> String {
        let tenths = Int((max(value, 0) * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)s"
    }
}
