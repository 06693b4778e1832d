import Foundation
import Testing

@testable import Hermetic

/// The scope a token is asked for: the challenge's, and for a repository being pushed to, `pull,push` on it
/// from the first challenge on (as containerd's pusher asks), so one token serves the whole push.
@Suite struct RegistryTokenScopeTests {
    @Test func aPushAsksForPullAndPushOnItsRepositoryFromTheFirstChallenge() {
        #expect(RegistryClient.tokenScope(nil, repository: "team/app", pushing: false) == "repository:team/app:pull")
        #expect(
            RegistryClient.tokenScope("repository:team/app:pull", repository: "team/app", pushing: false)
                == "repository:team/app:pull")
        #expect(
            RegistryClient.tokenScope("repository:team/app:pull", repository: "team/app", pushing: true)
                == "repository:team/app:pull,push")
        #expect(
            RegistryClient.tokenScope(nil, repository: "team/app", pushing: true) == "repository:team/app:pull,push")
        // A mount's source repository keeps the scope the challenge names; a repository whose name begins
        // with the pushed one's is another repository.
        #expect(
            RegistryClient.tokenScope(
                "repository:team/app:push,pull repository:team/base:pull repository:team/app:x:pull",
                repository: "team/app", pushing: true)
                == "repository:team/app:pull,push repository:team/base:pull repository:team/app:x:pull")
    }

    @Test func aSecond401SaysWhyAndHowToLogIn() throws {
        let local = try RegistryReference(parsing: "127.0.0.1:5000/team/app:v1")
        let hub = try RegistryReference(parsing: "team/app:v1")
        #expect(
            RegistryClient.refusedAgain(local, challenge: #"Bearer realm="x""#, sentCredentials: false)
                == "authentication failed: the registry answered 401 again to anonymous access; log in with "
                + "docker login 127.0.0.1:5000")
        #expect(
            RegistryClient.refusedAgain(hub, challenge: "", sentCredentials: false)
                == "authentication failed: the registry answered 401 again to anonymous access; log in with docker login"
        )
        #expect(
            RegistryClient.refusedAgain(
                local,
                challenge:
                    #"Bearer realm="x",service="s",scope="repository:team/app:pull,push",error="insufficient_scope""#,
                sentCredentials: true, pushing: true)
                == "authentication failed: the registry answered 401 again: the credentials do not grant the access "
                + "it needs (repository:team/app:pull,push), insufficient_scope")
        #expect(
            RegistryClient.refusedAgain(local, challenge: #"Basic realm="x""#, sentCredentials: true)
                == "authentication failed: the registry answered 401 again to the credentials it asked for")
    }
}
