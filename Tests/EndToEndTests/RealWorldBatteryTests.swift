import Foundation
import Hermetic
import TestSupport
import Testing

/// Dockerfiles shaped like those of public Go, Python, Node and C projects, built on a busybox base by the
/// real binary: multi-stage builds, heredocs, cache/bind/tmpfs mounts, COPY --link/--chmod/--parents/
/// --exclude, ARG in FROM and $BUILDPLATFORM. Each checks what the image holds, not only that it built.
@Suite struct RealWorldBatteryTests {
    typealias Build = RealWorldDockerfileTests.Build

    /// A Go project's pattern: the base from a global ARG, a builder on $BUILDPLATFORM, the source bound
    /// at the working directory, a module cache, the result copied into scratch.
    @Test func goStyleCrossBuild() throws {
        let build = try Build(
            """
            # syntax=docker/dockerfile:1
            ARG BASE_IMAGE=busybox
            ARG APP_VERSION=dev

            FROM --platform=$BUILDPLATFORM ${BASE_IMAGE} AS build
            ARG TARGETOS TARGETARCH
            ARG APP_VERSION
            WORKDIR /src
            RUN --mount=type=cache,target=/root/.cache/go-build \\
                --mount=type=bind,target=. \\
                mkdir -p /out && cp main.go /out/app \\
                && echo "$TARGETOS/$TARGETARCH $APP_VERSION" > /out/platform \\
                && date > /root/.cache/go-build/stamp

            FROM build AS test
            RUN --mount=type=cache,target=/root/.cache/go-build test -f /root/.cache/go-build/stamp && touch /tested

            FROM scratch AS release
            COPY --from=build /out/ /
            ENTRYPOINT ["/app"]
            """,
            files: ["main.go": "package main\n", "go.mod": "module x\n"])
        let outcome = try build.run(["--build-arg", "APP_VERSION=1.2.3"])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("app") == "package main\n")
        #expect(build.file("platform") == "linux/\(Self.hostArchitecture) 1.2.3\n")
        let test = try build.run(["--target", "test"])
        try #require(test.status == 0, "\(test.standardError)")
        #expect(build.exists("tested"))
    }

    static var hostArchitecture: String {
        #if arch(x86_64)
            "amd64"
        #elseif arch(arm64)
            "arm64"
        #else
            "unknown"
        #endif
    }

    /// A Python project's pattern: heredoc files and scripts, `<<-` with tabs, a heredoc run by another
    /// interpreter, a non-root user made in the image, and --chown by name.
    @Test func pythonStyleHeredocsAndUser() throws {
        let build = try Build(
            """
            FROM busybox
            ENV APP_HOME=/app NAME=world
            WORKDIR $APP_HOME
            RUN echo 'svc:x:10001:10001::/home/svc:/bin/sh' >> /etc/passwd && echo 'svc:x:10001:' >> /etc/group
            COPY --chown=svc:svc <<EOF config.ini
            [main]
            name=${NAME}
            EOF
            COPY --chmod=0755 <<'EOF' /usr/local/bin/entry
            #!/bin/sh
            echo "hello $NAME"
            EOF
            RUN <<EOT
            set -e
            echo first > /app/first
            echo second >> /app/first
            EOT
            RUN <<-EOF
            \techo tabbed > /app/tabbed
            \tEOF
            RUN <<EOF sh -e
            echo "run by sh -e" > /app/by-sh
            EOF
            USER svc
            RUN id -un > /tmp/whoami && test "$(cat /tmp/whoami)" = svc
            USER root
            RUN stat -c '%U:%G %a' /app/config.ini /usr/local/bin/entry > /app/modes && /usr/local/bin/entry > /app/entry
            """)
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("app/config.ini") == "[main]\nname=world\n")
        #expect(build.file("app/first") == "first\nsecond\n")
        #expect(build.file("app/tabbed") == "tabbed\n")
        #expect(build.file("app/by-sh") == "run by sh -e\n")
        #expect(build.file("app/modes") == "svc:svc 644\nroot:root 755\n")
        #expect(build.file("app/entry") == "hello world\n")
    }

    /// A Node monorepo's pattern: manifests first with --parents, sources with --exclude, a locked npm
    /// cache, a tmpfs for scratch files, a symbolic --chmod, COPY --link into a later stage.
    @Test func nodeStyleMonorepo() throws {
        let build = try Build(
            """
            FROM busybox AS deps
            WORKDIR /repo
            COPY --parents packages/*/package.json ./
            RUN --mount=type=cache,target=/root/.npm,sharing=locked \\
                --mount=type=tmpfs,target=/tmp \\
                find . -name package.json | sort > /repo/manifests && echo tmp > /tmp/scratch

            FROM deps AS build
            COPY --exclude=**/*.md --exclude=**/test/** . .
            COPY --chmod=u+x,go+rx scripts/run.sh /usr/local/bin/run
            RUN find packages -type f | sort > /repo/files && ls /tmp > /repo/tmp-listing

            FROM busybox
            COPY --link --from=build /repo /srv
            COPY --link --from=build /usr/local/bin/run /usr/local/bin/run
            RUN stat -c '%a' /usr/local/bin/run > /srv/run-mode
            """,
            files: [
                "packages/a/package.json": "{}\n", "packages/a/index.js": "a\n", "packages/a/README.md": "r\n",
                "packages/b/package.json": "{}\n", "packages/b/test/b.test.js": "t\n", "packages/b/lib.js": "b\n",
                "scripts/run.sh": "#!/bin/sh\n", "README.md": "top\n",
            ])
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("srv/manifests") == "./packages/a/package.json\n./packages/b/package.json\n")
        #expect(
            build.file("srv/files")
                == "packages/a/index.js\npackages/a/package.json\npackages/b/lib.js\npackages/b/package.json\n")
        #expect(build.file("srv/tmp-listing") == "")
        #expect(build.file("srv/run-mode") == "755\n")
        #expect(!build.exists("srv/README.md"))
    }

    /// Docker's Go template: files bound one by one at relative targets, a relative cache target, a secret
    /// as a file and as an environment variable; none of the mount points lands in the layer.
    @Test func dockerInitGoTemplate() throws {
        let build = try Build(
            """
            ARG BASE=busybox
            FROM ${BASE:-nothing} AS build
            WORKDIR /src
            RUN --mount=type=cache,target=go/pkg/mod/ \\
                --mount=type=bind,source=go.sum,target=go.sum \\
                --mount=type=bind,source=go.mod,target=go.mod \\
                cat go.mod go.sum > /modules && touch go/pkg/mod/downloaded
            RUN --mount=type=cache,target=go/pkg/mod/ ls go/pkg/mod > /cached
            RUN --mount=type=secret,id=netrc,target=/root/.netrc \\
                --mount=type=secret,id=token,env=TOKEN \\
                wc -c < /root/.netrc > /netrc-size && echo ${#TOKEN} > /token-length
            RUN ls -A /src > /left-in-src

            FROM scratch
            COPY --from=build --chown=root:root /modules /cached /netrc-size /token-length /left-in-src /out/
            """,
            files: ["go.mod": "module example.com/app\n", "go.sum": "sum\n", "netrc": "machine x\n"])
        let outcome = try build.run(
            [
                "--secret", "id=netrc,src=\(build.context)/netrc", "--secret", "id=token,env=TOKEN_VALUE",
            ], environment: ["TOKEN_VALUE": "t0k3n"])
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("out/modules") == "module example.com/app\nsum\n")
        #expect(build.file("out/cached") == "downloaded\n")
        #expect(build.file("out/netrc-size") == "10\n")
        #expect(build.file("out/token-length") == "5\n")
        #expect(build.file("out/left-in-src") == "")
    }

    /// A C project's pattern: a pipefail SHELL, a release tarball ADDed with --chown and extracted, a cache
    /// owned by the build user, a relative WORKDIR, .dockerignore, and the runtime config.
    @Test func cStyleReleaseBuild() throws {
        let build = try Build(
            """
            FROM busybox AS builder
            SHELL ["/bin/sh", "-o", "pipefail", "-c"]
            ARG PREFIX=/usr/local
            ENV CFLAGS="-O2 -g" \\
                PATH=$PREFIX/sbin:$PATH
            WORKDIR /build
            ADD --chown=1000:1000 release.tar.gz ./
            WORKDIR src
            USER 1000:1000
            RUN --mount=type=cache,target=/home/app/.ccache,uid=1000,gid=1000 \\
                --network=none \\
                echo "$CFLAGS" | tr -d ' ' > built && cat hello.c >> built && touch /home/app/.ccache/obj
            RUN --mount=type=cache,target=/home/app/.ccache,uid=1000,gid=1000 ls /home/app/.ccache > cache-listing
            USER root
            COPY . /ctx/
            RUN ls -A /ctx > /build/src/ctx-listing && stat -c '%u:%g' /build/src/hello.c > /build/src/owner \\
                && pwd > /build/src/pwd && echo "$PATH" > /build/src/path

            FROM busybox
            COPY --from=0 /build/src/ /opt/app/
            EXPOSE 8080/tcp 9090
            VOLUME ["/data"]
            HEALTHCHECK --interval=30s CMD wget -q -O- http://localhost:8080/ || exit 1
            STOPSIGNAL SIGQUIT
            USER 1000
            ENTRYPOINT ["/opt/app/run"]
            CMD ["--port", "8080"]
            """,
            files: [".dockerignore": "*.log\nsecret/\n", "debug.log": "x\n", "secret/key": "k\n", "notes.txt": "n\n"])
        try makeTarball(
            at: build.context + "/release.tar.gz", files: ["src/hello.c": "int main(void){return 0;}\n"],
            scratch: build.scratch.path)
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("opt/app/built") == "-O2-g\nint main(void){return 0;}\n")
        #expect(build.file("opt/app/cache-listing") == "obj\n")
        #expect(build.file("opt/app/ctx-listing") == ".dockerignore\nDockerfile\nnotes.txt\nrelease.tar.gz\n")
        #expect(build.file("opt/app/owner") == "1000:1000\n")
        #expect(build.file("opt/app/pwd") == "/build/src\n")
        #expect(
            build.file("opt/app/path")
                == "/usr/local/sbin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n")
    }

    /// Debian-style package steps and BuildKit's own Dockerfile shapes: two locked caches, a read-write
    /// bind whose writes are discarded, several heredocs in one COPY, a heredoc fed to a program, ARG
    /// defaults that use other ARGs, and `--mount=target=.` of another stage.
    @Test func packagingAndHeredocShapes() throws {
        let build = try Build(
            """
            ARG ALPINE_VERSION=3.19
            ARG BASE=busybox
            FROM ${BASE} AS gen
            ARG ALPINE_VERSION
            ARG TAG=v${ALPINE_VERSION}-custom
            WORKDIR /gen
            COPY <<EOF1 <<EOF2 ./
            one $TAG
            EOF1
            two
            EOF2
            RUN <<EOF awk '{ print toupper($0) }' > /gen/upper
            shout
            EOF

            FROM busybox
            RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\
                --mount=type=cache,target=/var/lib/apt,sharing=locked \\
                echo pkg >> /var/cache/apt/archives && cat /var/cache/apt/archives > /installed
            RUN --mount=type=bind,target=/src,rw echo scribble > /src/Dockerfile && cat /src/Dockerfile > /wrote
            WORKDIR /out
            RUN --mount=from=gen,source=/gen,target=. cat EOF1 EOF2 upper > /generated
            RUN --mount=type=bind,target=/src cat /src/Dockerfile | head -1 > /context-unchanged
            """)
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("installed") == "pkg\n")
        #expect(build.file("wrote") == "scribble\n")
        #expect(build.file("context-unchanged") == "ARG ALPINE_VERSION=3.19\n")
        #expect(build.file("generated") == "one v3.19-custom\ntwo\nSHOUT\n")
    }

    /// Files as editors and generators write them: CRLF line ends, a UTF-8 byte order mark, parser
    /// directives, comments and blank lines inside continuations, ONBUILD in a base stage, same-line ENV
    /// references, EXPOSE from a variable.
    @Test func editorAndStyleVariants() throws {
        let text = """
            \u{FEFF}# syntax=docker/dockerfile:1.7
            # check=skip=JSONArgsRecommended
            FROM busybox AS Base
            ONBUILD COPY hello.txt /onbuild/
            ENV A=1
            ENV A=2 B=$A
            ARG PORT=8080
            EXPOSE $PORT
            RUN echo "a=$A b=$B" > /env \\
                # a comment inside the continuation
            \\
                && echo continued >> /env

            FROM base
            RUN cat /onbuild/hello.txt >> /env
            CMD exec /bin/sh -c 'echo hi'
            """
        let build = try Build(text.replacingOccurrences(of: "\n", with: "\r\n"), files: ["hello.txt": "hello\n"])
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("env") == "a=2 b=1\ncontinued\nhello\n")
    }

    /// Wildcard and JSON-form copies as Node and Python projects write them: `package*.json ./`,
    /// `requirements*.txt`, a name with a space, a directory symlink in the context, a local ADD of a
    /// directory and of an archive left packed.
    @Test func wildcardAndJSONFormCopies() throws {
        let build = try Build(
            """
            FROM busybox
            WORKDIR /usr/src/app
            COPY package*.json ./
            COPY requirements*.txt /py/
            COPY ["docs/read me.txt", "/docs/"]
            COPY ["assets", "/assets"]
            ADD config /etc/app/
            ADD --unpack=false vendor.tar.gz /vendor/
            RUN ls -A /usr/src/app /py /docs /assets /etc/app /vendor > /listing
            """,
            files: [
                "package.json": "{}\n", "package-lock.json": "{}\n", "requirements.txt": "flask\n",
                "docs/read me.txt": "r\n", "assets/logo.svg": "<svg/>\n", "config/app.yaml": "a: 1\n",
            ])
        try makeTarball(at: build.context + "/vendor.tar.gz", files: ["lib.js": "x\n"], scratch: build.scratch.path)
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        // busybox ls lists its arguments in name order.
        #expect(
            build.file("listing")
                == """
                /assets:
                logo.svg

                /docs:
                read me.txt

                /etc/app:
                app.yaml

                /py:
                requirements.txt

                /usr/src/app:
                package-lock.json
                package.json

                /vendor:
                vendor.tar.gz

                """)
    }

    /// Java and OpenShift shapes: a jar picked by wildcard from another stage into a file name, group
    /// permissions equal to the user's (`--chmod=g=u`), an arbitrary uid without a passwd entry, and a
    /// cache mounted inside a read-only bind of the context (Node's node_modules cache; its mount point must
    /// exist in the context, as runc under BuildKit cannot make one inside a read-only bind either).
    @Test func javaAndOpenShiftShapes() throws {
        let build = try Build(
            """
            FROM busybox AS build
            WORKDIR /app
            RUN mkdir -p target && echo jar > target/app-1.0.jar && echo src > target/app-1.0-sources.txt
            RUN --mount=type=bind,target=/src \\
                --mount=type=cache,target=/src/node_modules \\
                touch /src/node_modules/installed && ls /src/node_modules > /app/modules

            FROM busybox
            COPY --from=build /app/target/*.jar app.jar
            COPY --from=build --chown=1001:0 --chmod=g=u /app/modules /opt/modules
            USER 1001
            RUN id -u > /tmp/uid && id -g >> /tmp/uid && cat /tmp/uid
            USER 0
            RUN stat -c '%a %u:%g' /opt/modules > /modes && cat /tmp/uid >> /modes
            """,
            files: ["node_modules/.keep": ""])
        let outcome = try build.run()
        try #require(outcome.status == 0, "\(outcome.standardError)")
        #expect(build.file("app.jar") == "jar\n")
        #expect(build.file("opt/modules") == "installed\n")
        #expect(build.file("modes") == "664 1001:0\n1001\n0\n")
    }

    /// A gzipped tarball made by the system's tar from `files` (directories 0755, files 0644), as a
    /// project's release tarball is.
    func makeTarball(at path: String, files: [String: String], scratch: String) throws {
        let tree = scratch + "/tarball-tree"
        for (name, text) in files {
            let file = tree + "/" + name
            try FileManager.default.createDirectory(
                atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: file, atomically: true, encoding: .utf8)
        }
        let tar = try ExternalTools.require("tar")
        let outcome = try HermeticProcess.run(
            tar, ["--owner=0", "--group=0", "--mode=u=rwX,go=rX", "-czf", path, "-C", tree, "."])
        try #require(outcome.status == 0, "\(outcome.standardError)")
    }
}
