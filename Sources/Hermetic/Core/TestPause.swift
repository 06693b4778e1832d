#if canImport(Glibc)
    import Glibc
#endif

/// A moment a test makes exact (named by a `HERMETIC_TEST_…` variable): the builder opens the FIFO for
/// reading, which blocks until the test opens it for writing, then reads until the test closes it.
enum TestPause {
    static func wait(on fifo: String?) {
        guard let fifo else { return }
        let fd = open(fifo, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 64)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count > 0 || (count < 0 && errno == EINTR) { continue }
            return
        }
    }
}
