// Execute/StageScheduler.swift — one configured `StageExecutor` per platform in; each platform's
// `BuiltImage` and one `BuildRecord` (merged in plan order) out. The needed stages of every platform are
// units; a unit starts once the stages it reads (its base, `COPY --from`, `RUN --mount from=`) are built,
// at most `--jobs` at once, each on a thread of its own. Nothing of the output depends on the timing:
// records are merged in plan order, progress is written in plan order (BuildLog's lanes), and on a failure
// the build reports what `--jobs 1` reports, the error of the earliest failing stage in plan order.

import Foundation

#if canImport(Glibc)
    import Glibc
#endif

struct StageScheduler {
    /// A needed stage of one platform's plan. Units are numbered in plan order (platforms in the order
    /// given, each one's stages in its build order); a unit's number is its progress lane.
    struct Unit {
        var platform: Int
        var stage: Int
        /// The units it reads, all numbered before it.
        var dependencies: [Int]
    }

    private enum Outcome {
        case built(BuildRecord)
        case failed(any Error)
        case cancelled
    }

    /// A stage's executor on its way to and from its task: only one task uses it at a time.
    private struct Handoff: @unchecked Sendable {
        var unit: Int
        var executor: StageExecutor
        var error: (any Error)?
    }

    private(set) var units: [Unit] = []
    private var executors: [StageExecutor]
    private let finished: [FinishedStages]
    private let jobs: Int

    init(executors: [StageExecutor], jobs: Int) {
        var executors = executors
        var finished: [FinishedStages] = []
        for (platform, executor) in executors.enumerated() {
            var unitOfStage: [Int: Int] = [:]
            for stage in executor.plan.buildOrder {
                unitOfStage[stage] = units.count
                units.append(
                    Unit(
                        platform: platform, stage: stage,
                        dependencies: executor.plan.stages[stage].dependencies.compactMap { unitOfStage[$0] }))
            }
            finished.append(FinishedStages())
            executors[platform].finishedStages = finished[platform]
        }
        self.executors = executors
        self.finished = finished
        self.jobs = max(jobs, 1)
    }

    /// Builds every unit; throws the error of the earliest failing unit in plan order.
    mutating func run() async throws -> ([BuiltImage], BuildRecord) {
        for index in executors.indices { try executors[index].preparePlatforms() }
        let threads = StageThreads(count: min(jobs, units.count))
        defer { threads.shutDown() }
        var outcomes: [Int: Outcome] = [:]
        var cancellations: [Int: StageCancellation] = [:]
        var failure: Int?
        await withTaskGroup(of: Handoff.self) { group in
            var started = Set<Int>()
            while true {
                for unit in units.indices where !started.contains(unit) && cancellations.count < jobs {
                    // After a failure only earlier units start: one of them may fail too, and come first.
                    if let failure, unit > failure { continue }
                    let ready = units[unit].dependencies.allSatisfy {
                        if case .built? = outcomes[$0] { true } else { false }
                    }
                    guard ready else { continue }
                    started.insert(unit)
                    switch prepare(unit) {
                    case .success(let (executor, cancellation)):
                        cancellations[unit] = cancellation
                        let handoff = Handoff(unit: unit, executor: executor)
                        let stage = executor.plan.stages[units[unit].stage]
                        group.addTask(executorPreference: threads) { await Self.runUnit(handoff, stage: stage) }
                    case .failure(let error):
                        outcomes[unit] = .failed(error)
                        failure = min(failure ?? unit, unit)
                        for (later, cancellation) in cancellations where later > unit { cancellation.cancel() }
                    }
                }
                guard !cancellations.isEmpty, let ended = await group.next() else { break }
                cancellations[ended.unit] = nil
                let laneLog = executors[units[ended.unit].platform].log.inLane(ended.unit)
                if let error = ended.error {
                    if error is StageCancellation.Cancelled {
                        outcomes[ended.unit] = .cancelled
                        laneLog.closeLane(cancelled: true)
                        continue
                    }
                    outcomes[ended.unit] = .failed(error)
                    guard failure.map({ ended.unit < $0 }) ?? true else { continue }
                    failure = ended.unit
                    for (unit, cancellation) in cancellations where unit > ended.unit { cancellation.cancel() }
                } else {
                    let unit = units[ended.unit]
                    finished[unit.platform].add(ended.executor.stages[unit.stage], index: unit.stage)
                    executors[unit.platform].learn(from: ended.executor)
                    outcomes[ended.unit] = .built(ended.executor.record)
                    laneLog.closeLane()
                }
            }
        }
        if let failure, case .failed(let error)? = outcomes[failure] {
            // Later failures lose to it; their steps say how they ended. Its own step ends when the build's
            // error is reported (`BuildLog.finish`).
            for (unit, outcome) in outcomes.sorted(by: { $0.key < $1.key }) where unit != failure {
                guard case .failed(let other) = outcome else { continue }
                executors[units[unit].platform].log.inLane(unit).closeLane(error: Self.oneLine("\(other)"))
            }
            throw error
        }
        var record = BuildRecord()
        for unit in units.indices {
            guard case .built(let unitRecord)? = outcomes[unit] else {
                throw DockerfileError(file: executors[0].file, line: 1, message: "internal: a stage was not built")
            }
            record.merge(unitRecord)
        }
        let images = try executors.indices.map { platform in
            try executors[platform].builtImage(target: finished[platform].state(of: executors[platform].plan.target))
        }
        return (images, record)
    }

    /// The executor that builds `unit`, with its cancellation.
    private func prepare(_ unit: Int) -> Result<(StageExecutor, StageCancellation), any Error> {
        Result {
            let cancellation = try StageCancellation()
            let executor = try executors[units[unit].platform].forStage(
                units[unit].stage, lane: unit, cancellation: cancellation)
            return (executor, cancellation)
        }
    }

    private static func runUnit(_ handoff: Handoff, stage: PlannedStage) async -> Handoff {
        var handoff = handoff
        do {
            try await handoff.executor.runStage(stage)
        } catch {
            handoff.error = error
        }
        // Scratch mounts of a stage that failed or was stopped are released here too.
        handoff.executor.releaseTemporaryMounts()
        return handoff
    }

    /// An error in one line, for a progress line (as the command line prints errors).
    static func oneLine(_ text: String) -> String {
        text.replacingOccurrences(of: "\n", with: "\\n").replacingOccurrences(of: "\r", with: "\\r")
    }
}

extension StageExecutor {
    /// Takes what a finished stage found out about this builder, so stages started later need not find it
    /// again: the way RUN roots are made, the warnings given.
    mutating func learn(from stage: StageExecutor) {
        if stage.rootMechanism == .copy { rootMechanism = .copy }
        warnedAboutCapabilities = warnedAboutCapabilities || stage.warnedAboutCapabilities
        warnedAboutPidsLimit = warnedAboutPidsLimit || stage.warnedAboutPidsLimit
    }
}

/// Stops a stage whose work another stage's failure made pointless: its running RUN step is killed (the
/// sandbox polls `descriptor`), and it stops before its next instruction.
final class StageCancellation: @unchecked Sendable {
    /// Not a `HermeticError`: it passes unchanged through the instruction that was stopped.
    struct Cancelled: Error {}

    /// Readable once `cancel` was called (a byte is written and never read).
    let descriptor: Int32
    private let writeEnd: Int32
    private let lock = NSLock()
    private var cancelled = false

    init() throws {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw SystemError("pipe", path: "stage cancellation", errno: errno) }
        descriptor = fds[0]
        writeEnd = fds[1]
        _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        _ = fcntl(writeEnd, F_SETFD, FD_CLOEXEC)
    }

    func cancel() {
        lock.withLock {
            guard !cancelled else { return }
            cancelled = true
            var byte: UInt8 = 1
            _ = write(writeEnd, &byte, 1)
        }
    }

    func check() throws {
        if lock.withLock({ cancelled }) { throw Cancelled() }
    }

    deinit {
        close(descriptor)
        close(writeEnd)
    }
}

/// The finished stages of one platform, which stages running at the same time read (`COPY --from`, bind
/// mounts). A stage's filesystem is made when a step first reads it, once, under that stage's own lock.
final class FinishedStages: @unchecked Sendable {
    private let lock = NSLock()
    private var states: [Int: StageState] = [:]
    private var stageLocks: [Int: NSLock] = [:]

    func add(_ state: StageState?, index: Int) {
        guard let state else { return }
        lock.withLock {
            states[index] = state
            stageLocks[index] = NSLock()
        }
    }

    func state(of index: Int) -> StageState? {
        lock.withLock { states[index] }
    }

    /// Stage `index` after `make` (which applies its missing layers) ran on it; nil if it is not finished.
    func materialized(_ index: Int, _ make: (inout StageState) throws -> Void) throws -> StageState? {
        guard let stageLock = lock.withLock({ stageLocks[index] }) else { return nil }
        return try stageLock.withLock {
            guard var state = lock.withLock({ states[index] }) else { return nil }
            try make(&state)
            lock.withLock { states[index] = state }
            return state
        }
    }
}

/// The threads stages run on. A RUN step holds its thread while it waits for the sandboxed child, which
/// would starve Swift's cooperative pool (one thread per core): each stage task prefers these instead.
final class StageThreads: TaskExecutor, @unchecked Sendable {
    private let condition = NSCondition()
    private var queue: [UnownedJob] = []
    private var open = true

    init(count: Int) {
        for _ in 0..<max(count, 1) {
            let thread = Thread { [self] in
                while let job = next() { job.runSynchronously(on: asUnownedTaskExecutor()) }
            }
            thread.start()
        }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        condition.lock()
        queue.append(unowned)
        condition.signal()
        condition.unlock()
    }

    /// The threads end once the queue is empty.
    func shutDown() {
        condition.lock()
        open = false
        condition.broadcast()
        condition.unlock()
    }

    private func next() -> UnownedJob? {
        condition.lock()
        defer { condition.unlock() }
        while queue.isEmpty && open { condition.wait() }
        return queue.isEmpty ? nil : queue.removeFirst()
    }
}
