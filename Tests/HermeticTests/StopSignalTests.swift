import Testing

@testable import Hermetic

/// STOPSIGNAL as moby/sys signal.ParseSignal (BuildKit's dispatchStopSignal) takes it.
@Suite struct StopSignalTests {
    @Test func namesAndNumbers() {
        for good in ["SIGTERM", "term", "SigKill", "9", "100", "-1", "+5", "RTMIN", "SIGRTMIN+15", "rtmax-14", "RTMAX"]
        {
            #expect(StageExecutor.isValidSignal(good), "\(good)")
        }
        for bad in [
            "0", "RTMINX", "RTMIN+16", "RTMAX-15", "RTMAX+1", "SIGSIGTERM", "", "TERM ", "99999999999999999999",
        ] {
            #expect(!StageExecutor.isValidSignal(bad), "\(bad)")
        }
    }
}
