/// Which parts of each instruction are expanded, as BuildKit does: ADD/COPY (sources, destination and
/// the --from, --chown, --chmod, --exclude, --checksum values; heredoc bodies when the delimiter was not
/// quoted), ENV and LABEL (keys and values), EXPOSE (into words), FROM (image and
/// --platform), STOPSIGNAL, USER, VOLUME and WORKDIR. RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK, ONBUILD and
/// MAINTAINER are left as written (the shell, or a later build, expands them).
extension Instruction {
    public func expanded(lookup: (String) -> String?, lexer: ShellLexer, file: String) throws(DockerfileError)
        -> Instruction
    {
        let line = range.start.line
        func word(_ text: String) throws(DockerfileError) -> String {
            do {
                return try lexer.processWord(text, lookup: lookup)
            } catch {
                throw DockerfileError(file: file, line: line, message: "\(error)")
            }
        }
        func pairs(_ list: [KeyValue]) throws(DockerfileError) -> [KeyValue] {
            try list.map { pair throws(DockerfileError) in
                KeyValue(key: try word(pair.key), value: try word(pair.value))
            }
        }
        var copy = self
        switch kind {
        case .from(var from):
            from.image = try word(from.image)
            if let platform = from.platform { from.platform = try word(platform) }
            copy.kind = .from(from)
        case .arg:
            // BuildKit's dispatchArg expands each default in turn, after the ARGs before it on the same line
            // are set, and never the names: the executor does it (StageExecutor, `.arg`).
            break
        case .env(let list): copy.kind = .env(try pairs(list))
        case .label(let list): copy.kind = .label(try pairs(list))
        case .expose(let ports):
            // BuildKit splits each EXPOSE argument into words after expanding it (`$PORTS` may hold several).
            var words: [String] = []
            for port in ports {
                do {
                    words += try lexer.processWords(port, lookup: lookup)
                } catch {
                    throw DockerfileError(file: file, line: line, message: "\(error)")
                }
            }
            copy.kind = .expose(words)
        case .volume(let paths): copy.kind = .volume(try paths.map(word))
        case .stopSignal(let value): copy.kind = .stopSignal(try word(value))
        case .user(let value): copy.kind = .user(try word(value))
        case .workdir(let value): copy.kind = .workdir(try word(value))
        case .copy(var instruction):
            let heredocNames = Set(instruction.heredocs.map(\.name))
            instruction.sources = try instruction.sources.map { source throws(DockerfileError) in
                heredocNames.contains(source) ? source : try word(source)
            }
            instruction.destination = try word(instruction.destination)
            instruction.from = try instruction.from.map(word)
            instruction.chown = try instruction.chown.map(word)
            instruction.chmod = try instruction.chmod.map(word)
            instruction.checksum = try instruction.checksum.map(word)
            instruction.excludes = try instruction.excludes.map(word)
            instruction.heredocs = try instruction.heredocs.map { heredoc throws(DockerfileError) in
                guard heredoc.expand else { return heredoc }
                var expanded = heredoc
                do {
                    expanded.content = try ShellLexer.processHeredoc(heredoc.content, lookup: lookup)
                } catch {
                    throw DockerfileError(file: file, line: line, message: "\(error)")
                }
                return expanded
            }
            copy.kind = .copy(instruction)
        case .run, .cmd, .entrypoint, .shell, .healthcheck, .onbuild, .maintainer:
            break
        }
        return copy
    }
}
