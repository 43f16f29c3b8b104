import MoongateConfig
import MoongatePolicy
import MoongateTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// proxy_auth with `users_file`, and `moongate.htpasswd` under it: hashes made at test time.
@Suite("htpasswd files (moongate.htpasswd, proxy_auth users_file)")
struct HtpasswdTests {
    /// proxy_auth loaded with `config`, its relative paths resolved against `folder`, before a plugin
    /// that tunnels every CONNECT (so a request proxy_auth lets through is a `tunnel`).
    /// proxy_auth over `folder`'s files. Its hook deadline is 2 s unless a test is about the
    /// deadline: a SHA-crypt check takes about 1.5 ms, well inside the default 10 ms, but the
    /// suites run in parallel and a loaded machine can stretch one past it.
    func proxyAuth(_ config: ConfigValue, folder: String, hookDeadline: Duration? = .seconds(2)) throws(PolicyLoadError) -> ScriptHarness {
        let path = "\(repositoryRoot)/plugins/proxy_auth.lua"
        let source: String
        do { source = try readFile(path) } catch { throw PolicyLoadError(step: .read, plugin: nil, file: path, message: "\(error)") }
        let allow = PluginSource(
            name: "allow_all", path: "inline/allow_all.lua", source: "return { connect = function() return moongate.tunnel() end }",
            priority: 20)
        var spec = PolicySpec(plugins: [
            PluginSource(name: "proxy_auth", path: path, source: source, priority: 10, config: config, hookDeadline: hookDeadline), allow,
        ])
        spec.dataFolder = folder
        return try ScriptHarness(spec: spec)
    }

    func usersFile(_ name: String) -> ConfigValue { .table([("users_file", .string(name))]) }

    func decision(_ harness: ScriptHarness, user: String, password: String) throws -> String {
        try harness.connect("example.org:443", headers: [basicCredentials(user, password)]).decision.summary
    }

    @Test("SHA-crypt hashes made by openssl passwd -5 and -6: the right password passes, a wrong one and an unknown user get 407")
    func shaCryptFromOpenSSL() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        folder.write("users.htpasswd", """
            # made by openssl
            alice:\(TestHashes.openssl("wonderland", method: "5"))
            bob:\(TestHashes.openssl("builder", method: "6"))

            """)
        let auth = try proxyAuth(usersFile("users.htpasswd"), folder: folder.path)
        #expect(try decision(auth, user: "alice", password: "wonderland") == "tunnel")
        #expect(try decision(auth, user: "bob", password: "builder") == "tunnel")
        #expect(try decision(auth, user: "alice", password: "builder") == "deny 407")
        #expect(try decision(auth, user: "carol", password: "wonderland") == "deny 407")
        #expect(try auth.connect("example.org:443").decision.summary == "deny 407")
    }

    @Test("bcrypt $2y$ and $2b$ hashes (crypt(3)'s own) pass when the plugin's hook deadline covers them")
    func bcryptWithItsOwnDeadline() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        folder.write("users.htpasswd", """
            alice:\(TestHashes.crypt("wonderland", prefix: "$2y$", count: 5))
            bob:\(TestHashes.crypt("builder", prefix: "$2b$", count: 5))
            """)
        let auth = try proxyAuth(usersFile("users.htpasswd"), folder: folder.path, hookDeadline: .seconds(2))
        #expect(try decision(auth, user: "alice", password: "wonderland") == "tunnel")
        #expect(try decision(auth, user: "bob", password: "builder") == "tunnel")
        #expect(try decision(auth, user: "bob", password: "wonderland") == "deny 407")
        #expect(try decision(auth, user: "alice", password: "wonderland") == "tunnel")
    }

    @Test("a bcrypt hash slower to verify than the plugin's hook deadline is refused when it loads, naming the deadline to set")
    func slowHashIsRefusedAtLoad() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        // A real cost-4 hash relabelled cost 14: a valid hash whose verification would take 1,024 times as long.
        let hash = "$2b$14$" + TestHashes.crypt("wonderland", prefix: "$2b$", count: 4).dropFirst(7)
        folder.write("users.htpasswd", "alice:\(hash)\n")
        do {
            _ = try proxyAuth(usersFile("users.htpasswd"), folder: folder.path, hookDeadline: .milliseconds(10))
            Issue.record("a cost-14 bcrypt file loaded under a 10 ms hook deadline")
        } catch {
            #expect(error.step == .initialize)
            #expect(error.message.contains("users.htpasswd:1: a bcrypt hash (cost 14)"), "\(error.message)")
            #expect(error.message.contains("hook deadline of 10 ms: give the plugin's entry hook_deadline:"), "\(error.message)")
            #expect(!error.message.contains(hash))
        }
    }

    @Test("the cache answers a credential seen before without crypt, right or wrong, and holds 1,024 at most")
    func cacheIsBounded() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        folder.write("users.htpasswd", "alice:\(TestHashes.crypt("wonderland", prefix: "$5$", count: 1000))\n")
        let script = """
            local users
            local M = {}
            function M.init(config) users = moongate.htpasswd(config.file) end
            function M.route(req)
              local password = req:header("x-password")
              if req.path == "/stats" then
                local s = users:stats()
                return moongate.respond(200, s.users .. " " .. s.cached .. " " .. s.hits .. " " .. s.misses)
              end
              if users:check(req:header("x-user"), password) then return moongate.respond(200, "yes") end
              return moongate.deny(401)
            end
            return M
            """
        var spec = PolicySpec(plugins: [PluginSource(name: "p", path: "inline/p.lua", source: script, config: .table([("file", .string("users.htpasswd"))]))])
        spec.dataFolder = folder.path
        let harness = try ScriptHarness(spec: spec)
        func ask(_ user: String, _ password: String) throws -> String {
            try harness.get("http://a.test/", headers: [HeaderField("x-user", user), HeaderField("x-password", password)]).decision.summary
        }
        func stats() throws -> String {
            guard case .respond(_, let body?, _) = try harness.get("http://a.test/stats").decision else { return "?" }
            return body
        }
        #expect(try ask("alice", "wonderland") == "respond 200")
        #expect(try ask("alice", "wonderland") == "respond 200")
        #expect(try ask("alice", "wrong") == "deny 401")
        #expect(try ask("alice", "wrong") == "deny 401")
        #expect(try ask("mallory", "wonderland") == "deny 401")  // unknown: neither a hit nor a miss
        #expect(try stats() == "1 2 2 2")
        // 256 sets of 4: 6,000 distinct guesses fill every set (a set left short has a chance of ~1e-7).
        for i in 0..<6_000 { _ = try ask("alice", "guess \(i)") }
        let after = try stats()
        #expect(after == "1 1024 2 6002", "users cached hits misses: \(after)")
    }

    @Test("refused lines name the file and line, never the hash: MD5, SHA-1, malformed, duplicates, an empty file")
    func badFilesAreRefused() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let good = TestHashes.crypt("x", prefix: "$6$")
        let cases: [(text: String, message: String)] = [
            ("alice:$apr1$j0QaJQS4$ETLOdbACiWf4.s0JwScwo/\n", "users.htpasswd:1: MD5 ($apr1$) is not accepted"),
            ("# users\nbob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", "users.htpasswd:2: SHA-1 ({SHA}) is not accepted"),
            ("alice \(good)\n", "users.htpasswd:1: expected user:hash"),
            ("alice:\(good.dropLast())\n", "users.htpasswd:1: not a SHA-512-crypt hash"),
            ("alice:\(good)\nbob:\(good)\nalice:\(good)\n", "users.htpasswd:3: user 'alice' is already on line 1"),
            ("# nobody\n\n", "users.htpasswd: no users"),
        ]
        for (text, message) in cases {
            folder.write("users.htpasswd", text)
            do {
                _ = try proxyAuth(usersFile("users.htpasswd"), folder: folder.path)
                Issue.record("loaded: \(text)")
            } catch {
                #expect(error.message.contains(message), "\(error.message)")
                #expect(!error.message.contains(good))
            }
        }
    }

    @Test("moongate.htpasswd is for load time only, and check refuses a foreign self")
    func apiMisuse() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        folder.write("users.htpasswd", "alice:\(TestHashes.crypt("x", prefix: "$5$"))\n")
        let inHook = """
            return { route = function(req) moongate.htpasswd("users.htpasswd") end }
            """
        var spec = PolicySpec(plugins: [PluginSource(name: "p", path: "inline/p.lua", source: inHook)])
        spec.dataFolder = folder.path
        let outcome = try ScriptHarness(spec: spec).get("http://a.test/")
        guard case .fault(let fault) = outcome.decision else { Issue.record("\(outcome)"); return }
        #expect(fault.message.contains("not in a hook"))

        let foreignSelf = """
            local users = moongate.htpasswd("users.htpasswd")
            local re = moongate.regex("x")
            return { route = function(req) return users.check(re, "alice", "x") and moongate.respond(200) or nil end }
            """
        spec.plugins = [PluginSource(name: "q", path: "inline/q.lua", source: foreignSelf)]
        let second = try ScriptHarness(spec: spec).get("http://a.test/")
        guard case .fault(let fault2) = second.decision else { Issue.record("\(second)"); return }
        #expect(fault2.message.contains("moongate.htpasswd expected"), "\(fault2.message)")
    }

    @Test("a generation keeps the file it checked: its instances serve that copy after the file is gone")
    func generationOwnsItsFile() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        let file = folder.write("users.htpasswd", "alice:\(TestHashes.crypt("wonderland", prefix: "$5$"))\n")
        let config = folder.write("moongate.yaml", """
            policy:
              plugins:
                - name: proxy_auth
                  file: \(repositoryRoot)/plugins/proxy_auth.lua
                  hook_deadline: 2s
                  config:
                    users_file: users.htpasswd
                - name: allow_all
                  file: allow_all.lua
            """)
        folder.write("allow_all.lua", "return { connect = function() return moongate.tunnel() end }\n")
        let spec = try PolicySpec.read(try ConfigLoader.load(path: config).policy)
        let generation = try PolicyGeneration.load(spec, id: 1)
        #expect(generation.spec.dataFiles.map(\.path) == [file])
        unlink(file)
        let instance = try generation.makeInstance(stats: PolicyStats())
        let good = try PolicyRequest.parse(
            line: "CONNECT example.org:443", headers: [basicCredentials("alice", "wonderland")], client: ClientInfo(ip: "192.0.2.1", port: 1))
        let bad = try PolicyRequest.parse(
            line: "CONNECT example.org:443", headers: [basicCredentials("alice", "x")], client: ClientInfo(ip: "192.0.2.1", port: 1))
        #expect(instance.decide(good).decision.summary == "tunnel")
        #expect(instance.decide(bad).decision.summary == "deny 407")
    }

    @Test("a check that cannot finish in what is left of its deadline is a deadline fault before crypt(3) runs")
    func missOverTheDeadlineFailsFirst() throws {
        let folder = TemporaryFolder()
        defer { folder.remove() }
        // Cost 14: about a second here, over the 100 ms the check in init is given (and under the
        // plugin's 10 s hook deadline, so the file itself loads).
        folder.write("users.htpasswd", "alice:$2b$14$" + TestHashes.crypt("wonderland", prefix: "$2b$", count: 4).dropFirst(7) + "\n")
        let script = """
            local M = {}
            function M.init() moongate.htpasswd("users.htpasswd"):check("alice", "wonderland") end
            return M
            """
        var spec = PolicySpec(
            plugins: [PluginSource(name: "p", path: "inline/p.lua", source: script, hookDeadline: .seconds(10))],
            initDeadline: .milliseconds(100))
        spec.dataFolder = folder.path
        guard let error = ScriptHarness.rejection(of: spec) else {
            Issue.record("a check over its deadline loaded")
            return
        }
        // Had crypt run, the message would be the generic "hook deadline of 100 ms exceeded".
        #expect(error.message.contains("a bcrypt verification takes about"), "\(error.message)")
        #expect(error.message.contains("of this hook's deadline of 100 ms (raise the plugin's hook_deadline)"), "\(error.message)")
    }
}
