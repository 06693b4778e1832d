import Testing

@testable import Hermetic

/// Exec form is Go's `encoding/json` reading of the arguments (BuildKit's parseJSON): what Go rejects is
/// the shell form.
@Suite struct JSONArrayFormTests {
    @Test func arraysOfStrings() {
        #expect(JSONArrayForm.read(#"["a", "b c"]"#) == .strings(["a", "b c"]))
        #expect(JSONArrayForm.read(#"[]"#) == .strings([]))
        #expect(JSONArrayForm.read(" [\"a\"] \n") == .strings(["a"]))
        #expect(
            JSONArrayForm.read(#"["\"q\" \\ \/ \b\f\n\r\t \u00e9 \ud83d\ude00"]"#)
                == .strings(["\"q\" \\ / \u{08}\u{0C}\n\r\t é 😀"]))
        // Go decodes a lone surrogate escape to U+FFFD.
        #expect(JSONArrayForm.read(#"["\ud800"]"#) == .strings(["\u{FFFD}"]))
        #expect(JSONArrayForm.read(#"["\ud800\u0041"]"#) == .strings(["\u{FFFD}A"]))
        #expect(JSONArrayForm.read(#"["\udc00x"]"#) == .strings(["\u{FFFD}x"]))
    }

    @Test func whatGoRejectsIsTheShellForm() {
        for text in [
            #"["a",]"#, #"['a']"#, #"["a""#, #"["a"] x"#, #"["a" "b"]"#, "[\"a\tb\"]", #"["\x"]"#, #"["\u12"]"#,
            #"[01]"#, #"[1.]"#, #"[-]"#, #"[tru]"#, "a", "", #"{"a": "b"}"#, #"[,]"#,
            // BuildKit's parser testfiles jeztah-invalid-json-*.
            #"["echo", "hello"#, #"['echo', 'hello']"#, #"["echo \"hello\""#,
        ] {
            #expect(JSONArrayForm.read(text) == .notJSON, "\(text)")
        }
    }

    @Test func arraysWithOtherValuesAreRefused() {
        for text in [#"["a", 1]"#, #"[true]"#, #"[null]"#, #"[["a"]]"#, #"[{"a": [1, 2e-3]}]"#, #"[-0.5E+2]"#] {
            #expect(JSONArrayForm.read(text) == .notStrings, "\(text)")
        }
    }

    @Test func deepNestingIsNotJSONRatherThanACrash() {
        let deep = String(repeating: "[", count: 20_000) + String(repeating: "]", count: 20_000)
        #expect(JSONArrayForm.read(deep) == .notJSON)
    }
}
