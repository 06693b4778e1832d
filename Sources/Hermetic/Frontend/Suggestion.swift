/// BuildKit's `suggest.Search` (util/suggest): the option nearest to a mistyped word, for a
/// `(did you mean X?)` after an error.
enum Suggestion {
    /// The option within Levenshtein distance 2 of `word` (insert, delete and substitute each cost 1), the
    /// nearest winning and the first in `options` among equals; nil when there is none or `word` is itself
    /// an option. Compared in lowercase; the answer takes the word's case as BuildKit's matchCase does: all
    /// lowercase or all uppercase when the word is, else the option in lowercase.
    static func nearest(to word: String, among options: [String]) -> String? {
        let lowered = word.lowercased()
        var match: String?
        var smallest = 3
        for option in options.map({ $0.lowercased() }) {
            if option == lowered { return nil }
            let distance = levenshtein(Array(lowered.unicodeScalars), Array(option.unicodeScalars))
            if distance < smallest {
                smallest = distance
                match = option
            }
        }
        guard let match else { return nil }
        if word == word.lowercased() { return match }
        if word == word.uppercased() { return match.uppercased() }
        return match
    }

    static func levenshtein(_ a: [Unicode.Scalar], _ b: [Unicode.Scalar]) -> Int {
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                current[j] = min(previous[j] + 1, current[j - 1] + 1, substitution)
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}
