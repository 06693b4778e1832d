/// in-toto Attestation Framework v1 Statement (https://in-toto.io/Statement/v1).
public struct InTotoStatement: Codable, Sendable, Hashable {
    public static let type = "https://in-toto.io/Statement/v1"
    public static let payloadType = "application/vnd.in-toto+json"

    public var type: String
    public var subject: [ResourceDescriptor]
    public var predicateType: String
    public var predicate: JSONValue

    enum CodingKeys: String, CodingKey {
        case type = "_type"
        case subject, predicateType, predicate
    }

    public init(subject: [ResourceDescriptor], predicateType: String, predicate: JSONValue) {
        self.type = Self.type
        self.subject = subject
        self.predicateType = predicateType
        self.predicate = predicate
    }
}

/// in-toto ResourceDescriptor: at least one of uri, digest, content; absent fields omitted.
public struct ResourceDescriptor: Codable, Sendable, Hashable {
    public var name: String?
    public var uri: String?
    public var digest: [String: String]?
    /// The resource's bytes, base64 (JSON's encoding of in-toto's `bytes`).
    public var content: String?
    public var downloadLocation: String?
    public var mediaType: String?
    public var annotations: [String: JSONValue]?

    public init(
        name: String? = nil, uri: String? = nil, digest: [String: String]? = nil, content: String? = nil,
        mediaType: String? = nil, annotations: [String: JSONValue]? = nil
    ) {
        self.name = name
        self.uri = uri
        self.digest = digest
        self.content = content
        self.mediaType = mediaType
        self.annotations = annotations
    }
}

/// SLSA Provenance v1 predicate (https://slsa.dev/provenance/v1).
public struct SLSAProvenance: Codable, Sendable, Hashable {
    public static let predicateType = "https://slsa.dev/provenance/v1"

    public var buildDefinition: BuildDefinition
    public var runDetails: RunDetails

    public struct BuildDefinition: Codable, Sendable, Hashable {
        public var buildType: String
        public var externalParameters: JSONValue
        public var internalParameters: JSONValue?
        public var resolvedDependencies: [ResourceDescriptor]?

        public init(
            buildType: String, externalParameters: JSONValue, internalParameters: JSONValue?,
            resolvedDependencies: [ResourceDescriptor]?
        ) {
            self.buildType = buildType
            self.externalParameters = externalParameters
            self.internalParameters = internalParameters
            self.resolvedDependencies = resolvedDependencies
        }
    }

    public struct RunDetails: Codable, Sendable, Hashable {
        public var builder: Builder
        public var metadata: Metadata?
        public var byproducts: [ResourceDescriptor]?

        public init(builder: Builder, metadata: Metadata?, byproducts: [ResourceDescriptor]?) {
            self.builder = builder
            self.metadata = metadata
            self.byproducts = byproducts
        }
    }

    public struct Builder: Codable, Sendable, Hashable {
        public var id: String
        public var version: [String: String]?
        public var builderDependencies: [ResourceDescriptor]?

        public init(id: String, version: [String: String]?) {
            self.id = id
            self.version = version
        }
    }

    public struct Metadata: Codable, Sendable, Hashable {
        public var invocationId: String?
        public var startedOn: String?
        public var finishedOn: String?

        public init(invocationId: String?, startedOn: String?, finishedOn: String?) {
            self.invocationId = invocationId
            self.startedOn = startedOn
            self.finishedOn = finishedOn
        }
    }

    public init(buildDefinition: BuildDefinition, runDetails: RunDetails) {
        self.buildDefinition = buildDefinition
        self.runDetails = runDetails
    }
}

/// SLSA Verification Summary Attestation v1 predicate (https://slsa.dev/verification_summary/v1).
public struct VerificationSummary: Codable, Sendable, Hashable {
    public static let predicateType = "https://slsa.dev/verification_summary/v1"

    public var verifier: Verifier
    public var timeVerified: String
    public var resourceUri: String
    public var policy: ResourceDescriptor
    public var inputAttestations: [ResourceDescriptor]?
    public var verificationResult: String
    public var verifiedLevels: [String]
    public var slsaVersion: String?

    /// The image as a package URL (`pkg:oci/NAME@sha256%3AHEX?repository_url=…&tag=…`, the purl spec's oci
    /// type): VSA's `resourceUri` must be a URI.
    public static func packageURL(name: String, digest hex: String) -> String {
        var reference = name
        if let at = reference.firstIndex(of: "@") { reference = String(reference[..<at]) }
        var tag: String?
        if let colon = reference.lastIndex(of: ":"), !reference[colon...].contains("/") {
            tag = String(reference[reference.index(after: colon)...])
            reference = String(reference[..<colon])
        }
        let last = reference.split(separator: "/").last.map { String($0).lowercased() } ?? "image"
        var query: [String] = []
        if reference.contains("/") { query.append("repository_url=" + percentEncoded(reference)) }
        if let tag { query.append("tag=" + percentEncoded(tag)) }
        return "pkg:oci/\(percentEncoded(last))@sha256%3A\(hex)"
            + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
    }

    static func percentEncoded(_ text: String) -> String {
        var result = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"), UInt8(ascii: "/"):
                result.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                result += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return result
    }

    public struct Verifier: Codable, Sendable, Hashable {
        public var id: String
        public var version: [String: String]?
        public init(id: String, version: [String: String]?) {
            self.id = id
            self.version = version
        }
    }

    public init(
        verifier: Verifier, timeVerified: String, resourceUri: String, policy: ResourceDescriptor,
        inputAttestations: [ResourceDescriptor]?, passed: Bool, verifiedLevels: [String], slsaVersion: String?
    ) {
        self.verifier = verifier
        self.timeVerified = timeVerified
        self.resourceUri = resourceUri
        self.policy = policy
        self.inputAttestations = inputAttestations
        self.verificationResult = passed ? "PASSED" : "FAILED"
        self.verifiedLevels = verifiedLevels
        self.slsaVersion = slsaVersion
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
