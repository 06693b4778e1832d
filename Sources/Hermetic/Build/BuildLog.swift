import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Progress and warnings for a person, on stderr, in buildx's forms (SPEC §5): `plain` text, a live `tty`
/// view, or `quiet` (warnings only). Copies share one display. Stages that run at the same time each
/// report in their own lane (`inLane`), numbered in plan order: in a lane, steps run one at a time, and a
/// step's output arrives from its relay thread.
public struct BuildLog: Sendable {
    /// Never `auto`: that is resolved when the log is made.
    public let mode: ProgressMode
    private let display: ProgressDisplay
    /// The lane this copy reports in; nil: outside any stage (warnings are written at once).
    private let lane: Int?

    /// `auto` is `tty` when stderr is a terminal, else `plain`, as buildx chooses. `stepOutputLimit`:
    /// the bytes of a step's output plain mode writes, nil for no limit (`stepOutputLimit(environment:)`).
    public init(mode: ProgressMode, stepOutputLimit: Int? = BuildLog.defaultStepOutputLimit) {
        let resolved: ProgressMode = mode == .auto ? (isatty(2) == 1 ? .tty : .plain) : mode
        self.mode = resolved
        display = ProgressDisplay(mode: resolved, stepOutputLimit: stepOutputLimit)
        lane = nil
    }

    /// BuildKit's default step log limit, 2 MiB: a stage held behind another (plain mode) keeps its
    /// output in memory until it is written, so it must be bounded.
    public static let defaultStepOutputLimit: Int? = 2 << 20

    /// The limit BuildKit's daemon reads from `BUILDKIT_STEP_LOG_MAX_SIZE` (bytes; negative: no limit; not
    /// a number: the default, as BuildKit ignores it).
    public static func stepOutputLimit(environment: [String: String]) -> Int? {
        guard let text = environment["BUILDKIT_STEP_LOG_MAX_SIZE"], let value = Int32(text) else {
            return defaultStepOutputLimit
        }
        return value < 0 ? nil : Int(value)
    }

    private init(_ other: BuildLog, lane: Int) {
        mode = other.mode
        display = other.display
        self.lane = lane
    }

    /// This log for the stage whose lane is `lane` (its place in plan order, from 0).
    func inLane(_ lane: Int) -> BuildLog { BuildLog(self, lane: lane) }

    /// How many steps the build will run (the tty view's total).
    func expectSteps(_ count: Int) { display.expect(count) }

    /// A step begins (the lane's previous one has ended); `name` is buildx's `[PLATFORM STAGE I/N] INSTRUCTION`.
    func startStep(_ name: String) { display.start(name, lane: lane ?? 0) }

    /// The step that began last in this lane has ended well.
    func endStep() { display.end(lane: lane ?? 0) }

    /// The step that began last in this lane was found in the build cache: buildx's `#N CACHED`.
    func cachedStep() { display.markCached(lane: lane ?? 0) }

    /// What a RUN step wrote (already masked), as it comes.
    func stepOutput(_ bytes: [UInt8]) { display.output(bytes, lane: lane ?? 0) }

    /// Whether a step's output is shown at all.
    var showsStepOutput: Bool { mode != .quiet }

    public func warning(_ text: String) {
        display.message("warning: \(text)\n", lane: lane)
    }

    /// A line about the build outside any step (what a cache export did); not shown in `quiet` mode.
    func note(_ text: String) {
        guard mode != .quiet else { return }
        display.message("\(text)\n", lane: lane)
    }

    /// This lane's stage is over: its running step, if any, ends as `CANCELED` (`cancelled`: another stage
    /// failed), or with `ERROR: error` (it failed, but an earlier stage's error is the build's); later lanes
    /// may then be shown.
    func closeLane(cancelled: Bool = false, error: String? = nil) {
        display.close(lane: lane ?? 0, cancelled: cancelled, error: error)
    }

    /// The build is over: the running step of the earliest open lane failed with `error` (one line); every
    /// lane still held is shown, and the tty view draws its last screen. Call it before the error line is
    /// printed.
    public func finish(error: String?) { display.finish(error: error) }
}

/// The shared state behind `BuildLog`; every call takes the lock, since steps of several stages run at
/// once, a step's output comes from its relay thread and the tty view is redrawn by a timer thread.
///
/// Plain progress stays in plan order whatever the timing: the earliest lane not yet closed (the live one)
/// is written as it comes, every later lane is held until all lanes before it are closed. Step numbers
/// (`#K`) are given as lines are written, so they count in that order too.
final class ProgressDisplay: @unchecked Sendable {
    private let mode: ProgressMode
    private let stepOutputLimit: Int?
    private let lock = NSLock()
    /// Every step begun, in the order begun.
    private var steps: [ProgressStep] = []
    /// The running step of each lane, as an index into `steps`.
    private var running: [Int: Int] = [:]
    private var expected = 0
    private let started = ProgressClock.now()
    private var view: TerminalProgressView?
    private var finished = false
    /// Plain mode: what each lane has to say that is not written yet, and which lanes are over.
    private var held: [Int: [PlainEvent]] = [:]
    private var closed: Set<Int> = []
    private var liveLane = 0
    /// Plain mode: step numbers given so far, and the number of each lane's step being written.
    private var numbered = 0
    private var laneNumbers: [Int: Int] = [:]
    /// A stage's warning that an earlier stage gave already is not repeated (stages that run at once
    /// would each give the once-per-build warnings).
    private var warned: Set<String> = []

    init(mode: ProgressMode, stepOutputLimit: Int?) {
        self.mode = mode
        self.stepOutputLimit = stepOutputLimit
    }

    func expect(_ count: Int) {
        lock.withLock { expected = count }
    }

    func start(_ name: String, lane: Int) {
        lock.withLock {
            endRunning(lane: lane, how: .done)
            running[lane] = steps.count
            steps.append(ProgressStep(name: name, started: ProgressClock.now(), lane: lane))
            switch mode {
            case .plain: emit(.start(name), lane: lane)
            case .tty: startViewIfNeeded()
            default: break
            }
        }
        redraw()
    }

    func end(lane: Int) {
        lock.withLock { endRunning(lane: lane, how: .done) }
        redraw()
    }

    func markCached(lane: Int) {
        lock.withLock {
            guard let index = running[lane] else { return }
            steps[index].cached = true
        }
    }

    func output(_ bytes: [UInt8], lane: Int) {
        lock.withLock {
            switch mode {
            case .plain:
                guard let index = running[lane] else { return emit(.output(bytes), lane: lane) }
                let shown = steps[index].clip(bytes, limit: stepOutputLimit)
                if !shown.isEmpty { emit(.output(shown), lane: lane) }
            case .tty:
                guard let index = running[lane] else { return }
                steps[index].output.append(bytes)
            default: break
            }
        }
    }

    func message(_ text: String, lane: Int?) {
        lock.withLock {
            if lane != nil {
                guard !warned.contains(text) else { return }
                warned.insert(text)
            }
            if let view, !finished {
                view.printAbove(text, screen: screen())
            } else if let lane, mode == .plain {
                emit(.text(text), lane: lane)
            } else {
                write(text)
            }
        }
    }

    func close(lane: Int, cancelled: Bool, error: String?) {
        lock.withLock {
            endRunning(lane: lane, how: error.map { .failed($0) } ?? (cancelled ? .cancelled : .done))
            closeHeld(lane)
        }
        redraw()
    }

    func finish(error: String?) {
        lock.withLock {
            guard !finished else { return }
            if let error { endRunning(lane: liveLane, how: .failed(error)) }
            for lane in running.keys.sorted() { endRunning(lane: lane, how: .cancelled) }
            // Whatever is still held is written, in lane order.
            for lane in held.keys.sorted() {
                for event in held[lane] ?? [] { write(event, lane: lane) }
            }
            held.removeAll()
            finished = true
            if let view {
                view.stop()
                view.draw(screen(final: true))
            }
        }
    }

    /// How a step ended.
    private enum Ending {
        case done
        case failed(String)
        case cancelled
    }

    /// What plain mode writes for a lane, held until the lane is live.
    private enum PlainEvent {
        case start(String)
        case output([UInt8])
        case text(String)
        /// buildx's `#N DONE 0.3s`, `#N CACHED`, `#N ERROR: …`, `#N CANCELED`, without the number.
        case end(String)
    }

    /// Ends the lane's running step, if any; plain mode says how it went.
    private func endRunning(lane: Int, how: Ending) {
        guard let index = running.removeValue(forKey: lane) else { return }
        steps[index].ended = ProgressClock.now()
        switch how {
        case .done: break
        case .failed: steps[index].failed = true
        case .cancelled: steps[index].cancelled = true
        }
        guard mode == .plain else { return }
        switch how {
        case .failed(let error): emit(.end("ERROR: \(error)"), lane: lane)
        case .cancelled: emit(.end("CANCELED"), lane: lane)
        case .done where steps[index].cached: emit(.end("CACHED"), lane: lane)
        case .done: emit(.end("DONE \(ProgressClock.seconds(steps[index].duration))"), lane: lane)
        }
    }

    private func emit(_ event: PlainEvent, lane: Int) {
        if lane == liveLane || finished {
            write(event, lane: lane)
        } else {
            held[lane, default: []].append(event)
        }
    }

    private func write(_ event: PlainEvent, lane: Int) {
        switch event {
        case .start(let name):
            numbered += 1
            laneNumbers[lane] = numbered
            write("#\(numbered) \(name)\n")
        case .output(let bytes): write(bytes)
        case .text(let text): write(text)
        case .end(let text): write("#\(laneNumbers[lane] ?? numbered) \(text)\n\n")
        }
    }

    /// Marks `lane` over; when it was the live one, the next lanes are written, up to the first still open.
    private func closeHeld(_ lane: Int) {
        closed.insert(lane)
        if lane != liveLane {
            return
        }
        while closed.contains(liveLane) {
            liveLane += 1
            for event in held.removeValue(forKey: liveLane) ?? [] { write(event, lane: liveLane) }
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

    /// The tty view's lines: buildx's header, each step begun with its time (stages in plan order), and the
    /// last lines of each running step's output (a step's output collapses when it ends well).
    private func screen(final: Bool = false) -> TerminalProgressView.Screen {
        let now = ProgressClock.now()
        let done = steps.filter { $0.ended != nil && !$0.failed && !$0.cancelled }.count
        let succeeded = final && steps.allSatisfy { !$0.failed && !$0.cancelled } && done == expected
        var header = "[+] Building \(ProgressClock.seconds(now - started)) (\(done)/\(max(expected, steps.count)))"
        if succeeded { header += " FINISHED" }
        var rows: [TerminalProgressView.Row] = [.init(text: header, timer: nil)]
        let ordered = steps.enumerated().sorted { ($0.element.lane, $0.offset) < ($1.element.lane, $1.offset) }
        for step in ordered.map(\.element) {
            let elapsed = (step.ended ?? now) - step.started
            let state = step.failed ? "ERROR " : step.cancelled ? "CANCELED " : step.cached ? "CACHED " : ""
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
    var lane = 0
    var ended: Double?
    var failed = false
    var cancelled = false
    var cached = false
    var output = OutputTail()
    /// Plain mode: the bytes of output written or held so far, and whether the limit was met.
    var outputBytes = 0
    var clipped = false

    var duration: Double { (ended ?? started) - started }

    /// What of `bytes` plain mode shows under `limit`: the part that fits, then once BuildKit's
    /// `[output clipped, log limit 2MiB reached]` line, then nothing.
    mutating func clip(_ bytes: [UInt8], limit: Int?) -> [UInt8] {
        guard let limit, !clipped else { return clipped ? [] : bytes }
        let room = max(0, limit - outputBytes)
        outputBytes += min(room, bytes.count)
        guard bytes.count > room else { return bytes }
        clipped = true
        return Array(bytes.prefix(room)) + Array("\n[output clipped, log limit \(Self.size(limit)) reached]\n".utf8)
    }

    /// A limit as BuildKit prints it: `2MiB`, `512KiB`, `1000B`.
    static func size(_ bytes: Int) -> String {
        if bytes > 0 && bytes % (1 << 20) == 0 { return "\(bytes >> 20)MiB" }
        if bytes > 0 && bytes % (1 << 10) == 0 { return "\(bytes >> 10)KiB" }
        return "\(bytes)B"
    }
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
