#if canImport(Glibc)
    import Glibc
#endif

/// Timestamps in image configs: RFC 3339 in UTC with whole seconds (`1970-01-01T00:00:00Z`),
/// computed with `gmtime_r`, so neither TZ nor locale can change them.
public enum RFC3339 {
    public static func format(_ secondsSinceEpoch: Int64) -> String {
        var time = time_t(secondsSinceEpoch)
        var parts = tm()
        gmtime_r(&time, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2))Z"
    }
}
