import Foundation
import Logging

@testable import RelayCluster

/// A PostgreSQL server of the test's own: `initdb` into a temporary folder, `pg_ctl start` on a free loopback port,
/// stopped (and the folder removed) by `stop()`. PostgreSQL refuses to run as root, so under root (CI) its programs
/// run as the `postgres` user, in a folder that user owns. Never a system service.
final class PrivatePostgres: Sendable {
    let folder: String
    let port: Int
    let binaries: String
    let asRoot: Bool

    var url: String { "postgres://relay@127.0.0.1:\(port)/postgres" }

    /// One server for the whole test process, stopped when the process exits.
    static let shared: Result<PrivatePostgres, any Error> = {
        let made = Result { try PrivatePostgres() }
        if case .success = made {
            atexit { if case .success(let server) = PrivatePostgres.shared { server.stop() } }
        }
        return made
    }()

    init() throws {
        guard let binaries = Self.findBinaries() else {
            throw Failure("PostgreSQL's initdb and pg_ctl are needed (Debian: apt-get install postgresql)")
        }
        self.binaries = binaries
        self.asRoot = getuid() == 0
        let folder = NSTemporaryDirectory() + "relay-pg-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        self.folder = folder
        self.port = try Self.freePort()
        chmod(folder, 0o755)
        if asRoot { try run("/bin/chown", ["postgres", folder], asPostgres: false) }
        try run(
            binaries + "/initdb",
            ["-D", folder + "/data", "-A", "trust", "-U", "relay", "--no-sync"],
            asPostgres: true
        )
        try run(
            binaries + "/pg_ctl",
            [
                "-D", folder + "/data", "-w", "-l", folder + "/log",
                "-o", "-p \(port) -k \(folder) -c listen_addresses=127.0.0.1 -c fsync=off", "start",
            ],
            asPostgres: true
        )
    }

    func stop() {
        try? run(binaries + "/pg_ctl", ["-D", folder + "/data", "-m", "immediate", "-w", "stop"], asPostgres: true)
        try? FileManager.default.removeItem(atPath: folder)
    }

    /// A database client on this server, its pool running until `body` returns.
    func withDatabase<T: Sendable>(_ body: (ClusterDatabase) async throws -> T) async throws -> T {
        var logger = Logger(label: "test")
        logger.logLevel = .error
        let database = try ClusterDatabase(url: url, logger: logger, timeout: .seconds(10))
        let pool = Task { await database.run() }
        defer { pool.cancel() }
        return try await body(database)
    }

    /// posix_spawn and waitpid: Foundation's `Process` was seen never to reap `pg_ctl start` (its server inherits
    /// the descriptor `Process` watches), hanging the test. For the same reason the child gets no descriptor but the
    /// three standard ones.
    private func run(_ program: String, _ arguments: [String], asPostgres: Bool) throws {
        let argv =
            asPostgres && asRoot
            ? ["/usr/sbin/runuser", "-u", "postgres", "--", program] + arguments : [program] + arguments
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        // Nothing else of this process reaches the server pg_ctl leaves running: another test's Foundation `Process`
        // waits for its child by a descriptor, and a copy held by postgres made that wait last until postgres quit
        // (seen: a JSON differential test's `node`, exited and unreaped, hung a CI run).
        Self.closeFromThree(&actions)
        var pid: pid_t = 0
        let cArguments = argv.map { strdup($0) } + [nil]
        defer { for argument in cArguments { free(argument) } }
        let spawned = posix_spawn(&pid, argv[0], &actions, nil, cArguments, environ)
        guard spawned == 0 else { throw Failure("cannot start \(argv[0]): errno \(spawned)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        guard status == 0 else {
            throw Failure("\(program) \(arguments.joined(separator: " ")) exited with status \(status)")
        }
    }

    /// `posix_spawn_file_actions_addclosefrom_np` (glibc 2.34), which Swift's Glibc module does not import; else a
    /// close action for each descriptor open now.
    private static func closeFromThree(_ actions: inout posix_spawn_file_actions_t) {
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        if let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") {
            _ = unsafeBitCast(symbol, to: CloseFrom.self)(&actions, 3)
            return
        }
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for descriptor in open.compactMap({ Int32($0) }) where descriptor > 2 {
            posix_spawn_file_actions_addclose(&actions, descriptor)
        }
    }

    private static func findBinaries() -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        var candidates = path.split(separator: ":").map(String.init)
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        candidates += versions.sorted().reversed().map { "/usr/lib/postgresql/\($0)/bin" }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0 + "/pg_ctl") }
    }

    /// A port below the kernel's ephemeral range that nothing listens on: never one that another test's `bind(0)`
    /// is handed meanwhile (seen: an upstream test's "closed port" was this server's port a moment later, and its
    /// HTTP client waited on PostgreSQL until its deadline).
    private static func freePort() throws -> Int {
        let range = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)) ?? ""
        let ephemeralLow = range.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } ?? 32768
        let (low, high) = ephemeralLow > 12000 ? (10000, ephemeralLow) : (ephemeralLow / 2, ephemeralLow)
        for _ in 0..<1000 {
            let port = Int.random(in: low..<high)
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(port).bigEndian
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                }
            }
            if bound { return port }
        }
        throw Failure("no free port below the ephemeral range")
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }
}
