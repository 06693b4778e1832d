import ArgumentParser
import Hermetic
import Provenance

struct KeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key", abstract: "Manage signing keys.", subcommands: [GenerateKey.self])

    struct GenerateKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "generate", abstract: "Write a new key pair: KEY (PKCS#8 PEM, mode 0600) and KEY.pub.")

        @Option(help: "Where to write the private key; the public key goes to the same path + .pub.") var out: String
        @Option(help: "ecdsa-p256 (default) or ed25519.") var algorithm: String = "ecdsa-p256"
        @Flag(help: "Replace KEY and KEY.pub if they exist.") var force = false

        func run() async throws {
            try await reportingErrors {
                guard let chosen = KeyAlgorithm(rawValue: algorithm) else {
                    throw ArgumentError(
                        argument: "--algorithm", value: algorithm, reason: "expected ecdsa-p256 or ed25519")
                }
                for path in [out, out + ".pub"] where !force && FileSystem.exists(path) {
                    throw ArgumentError(
                        argument: "--out", value: out,
                        reason: "\(path) exists; a key is never overwritten without --force")
                }
                let key = try SigningKey.generate(chosen)
                try FileSystem.writeAtomically(try key.privateKeyPEM(), to: out, mode: 0o600)
                try FileSystem.writeAtomically(try key.publicKey.publicKeyPEM(), to: out + ".pub", mode: 0o644)
                print("key id \(key.keyID)")
            }
        }
    }
}
