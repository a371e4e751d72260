import FalQueue
import Foundation
import Glibc
import Logging
import NIOCore
import NIOPosix
import RelayCore
import RelayJobs
import RelayStore
import Synchronization
import Testing

@testable import RelayUpstreams

/// The origin unreachable or failing (the circuit breaker), and how the origin is trusted and configured.
extension FalOriginUpstreamTests {
    // MARK: - Origin down and the circuit breaker

    @Test func anUnreachableOriginFailsTheJobAndOpensTheCircuit() async throws {
        let port = try await Self.closedPort()
        try await withOrigin(
            configure: {
                $0.baseURL = "http://127.0.0.1:\(port)"
                $0.breaker = OriginCircuitBreaker.Configuration(failureThreshold: 2, coolDown: .seconds(60))
            },
            body: { fixture in
                for _ in 0..<2 {
                    let (job, log) = try makeJob()
                    _ = fixture.upstream.start(job)
                    guard case .failure(let error) = try await outcome(of: job) else {
                        Issue.record("expected failure, got \(job.status.phase)")
                        return
                    }
                    #expect(error.status == 503 && error.errorType == "runner_connection_refused")
                    #expect(error.message.contains("after 4 attempts"))
                    #expect(log.terminals == 1)
                }
                guard case .open = fixture.upstream.circuitState else {
                    Issue.record("expected the circuit open, got \(fixture.upstream.circuitState)")
                    return
                }
                let (job, _) = try makeJob()
                _ = fixture.upstream.start(job)
                // Failed at once, inside `start`.
                #expect(
                    job.status.phase
                        == .completed(.failure(.unavailable("origin circuit open", type: "runner_connection_refused")))
                )
            }
        )
    }

    @Test func aProbeThatSucceedsClosesTheCircuit() async throws {
        var script = FakeFalOrigin.Script()
        script.submitFailures = [503]
        let clock = TestClock()
        try await withOrigin(
            script,
            configure: {
                $0.retry = RetryPolicy(maxAttempts: 1)
                $0.breaker = OriginCircuitBreaker.Configuration(failureThreshold: 1, coolDown: .seconds(60))
                $0.now = { clock.now }
            },
            body: { fixture in
                let (first, _) = try makeJob()
                _ = fixture.upstream.start(first)
                guard case .failure(let error) = try await outcome(of: first) else {
                    Issue.record("expected failure, got \(first.status.phase)")
                    return
                }
                #expect(error.status == 502 && error.message.contains("HTTP 503"))
                let (rejected, _) = try makeJob()
                _ = fixture.upstream.start(rejected)
                #expect(
                    rejected.status.phase
                        == .completed(.failure(.unavailable("origin circuit open", type: "runner_connection_refused")))
                )
                clock.advance(by: .seconds(60))
                let (probe, _) = try makeJob()
                _ = fixture.upstream.start(probe)
                guard case .success = try await outcome(of: probe) else {
                    Issue.record("expected the probe to succeed, got \(probe.status.phase)")
                    return
                }
                #expect(fixture.upstream.circuitState == .closed(consecutiveFailures: 0))
                #expect(fixture.origin.record.withLock { $0.submitAttempts } == 2)
            }
        )
    }

    // MARK: - TLS and configuration

    @Test func trustsAnOriginSignedByTheExtraCA() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("origin-ca-\(UUID().uuidString)")
            .path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        guard let files = try Self.makeCertificates(in: directory) else { return }
        try await withOrigin(
            tls: (files.certificate, files.key),
            configure: { $0.additionalCAPath = files.ca },
            body: {
                fixture in
                #expect(fixture.origin.baseURL.hasPrefix("https://"))
                let (job, log) = try makeJob()
                _ = fixture.upstream.start(job)
                guard case .success(let result, _) = try await outcome(of: job) else {
                    Issue.record("expected success, got \(job.status.phase)")
                    return
                }
                #expect(log.logs == ["line 1", "line 2", "line 3"])
                try await expectMediaPulled(result, store: fixture.store, origin: fixture.origin)
            }
        )
        // Without the CA the certificate is refused, at once and without retrying.
        try await withOrigin(tls: (files.certificate, files.key)) { fixture in
            let (job, _) = try makeJob()
            _ = fixture.upstream.start(job)
            guard case .failure(let error) = try await outcome(of: job) else {
                Issue.record("expected failure, got \(job.status.phase)")
                return
            }
            #expect(error.message.contains("TLS"))
            #expect(fixture.origin.record.withLock { $0.submitAttempts } == 0)
        }
    }

    @Test func refusesABadConfiguration() async throws {
        let hasher = KeyedHasher(secret: Array(repeating: 1, count: KeyedHasher.secretSize))
        let pool = NIOThreadPool(numberOfThreads: 1)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("origin-cfg-\(UUID().uuidString)")
            .path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try BlobStore(directory: directory, hasher: hasher, threadPool: pool)
        let logger = Logger(label: "origin-test")
        #expect(throws: FalOriginUpstream.ConfigurationError.self) {
            try FalOriginUpstream(
                configuration: .init(baseURL: "queue.fal.run", apiKey: nil, publicBaseURL: { "" }),
                store: store,
                logger: logger
            )
        }
        #expect(throws: FalOriginUpstream.ConfigurationError.self) {
            try FalOriginUpstream(
                configuration: .init(
                    baseURL: "https://queue.fal.run",
                    apiKey: "k",
                    additionalCAPath: directory + "/missing.pem",
                    publicBaseURL: { "" }
                ),
                store: store,
                logger: logger
            )
        }
    }

    /// A private CA and a leaf for 127.0.0.1 made with openssl (PROTOCOL.md §10); nil (test skipped) without it.
    static func makeCertificates(in directory: String) throws -> (ca: String, certificate: String, key: String)? {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let script = """
            set -e
            cd "$1"
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=origin-test-ca \\
              -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \\
              -addext subjectKeyIdentifier=hash
            openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1
            printf '%s\\n' subjectAltName=IP:127.0.0.1 basicConstraints=critical,CA:FALSE \\
              keyUsage=critical,digitalSignature,keyEncipherment extendedKeyUsage=serverAuth \\
              authorityKeyIdentifier=keyid subjectKeyIdentifier=hash > ext.cnf
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script, "sh", directory]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            return nil
        }
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            Issue.record("openssl could not make the test certificates (exit \(process.terminationStatus))")
            return nil
        }
        return (directory + "/ca.pem", directory + "/server.pem", directory + "/server.key")
    }

    /// A loopback port that refuses connections and that no other test can take meanwhile: a socket bound to it that
    /// never listens (closing a listener instead frees the port for the next test that binds port 0, which then
    /// accepts and never answers). The socket stays open for the life of the test process.
    static func closedPort() async throws -> Int {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw ClosedPortError() }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
                Glibc.bind(socket, generic, length) == 0 && getsockname(socket, generic, &length) == 0
            }
        }
        guard bound else {
            close(socket)
            throw ClosedPortError()
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    struct ClosedPortError: Error {}

    @Test func platformHeadersReachTheOriginAndNoRetryMeansOneAttempt() async throws {
        var script = FakeFalOrigin.Script()
        script.submitFailures = [503]
        try await withOrigin(script) { fixture in
            let platform = try PlatformHeaders(
                value: { name in
                    [
                        "x-fal-no-retry": "1", "x-fal-tags": "team=ml,fal.x=1", "x-fal-queue-priority": "low",
                        "x-fal-runner-hint": "lora-7", "x-fal-request-timeout": "30",
                    ][name.lowercased()]
                },
                query: { $0 == "fal_max_queue_length" ? "4" : nil }
            )
            let job = Job(
                input: try ModelInput(model: Self.model, input: ["prompt": "a fox in the snow", "seed": 7]),
                key: RequestKey(digest: Digest128(high: 1, low: 3)),
                platform: platform
            )
            _ = fixture.upstream.start(job)
            guard case .failure(let error) = try await outcome(of: job) else {
                Issue.record("expected failure, got \(job.status.phase)")
                return
            }
            #expect(error.message.contains("HTTP 503"), "\(error)")
            let record = fixture.origin.record.withLock { $0 }
            #expect(record.submitAttempts == 1, "x-fal-no-retry: the relay does not repeat the submit")
            // The request's own deadline and queue limit stay with the relay, which keeps them per request: a job that
            // other requests may share must not end or be refused at the origin by one request's limits.
            #expect(record.submitQuery == nil)
            #expect(
                record.platformHeaders == [
                    "x-fal-no-retry": "1", "x-fal-tags": "team=ml", "x-fal-queue-priority": "low",
                    "x-fal-runner-hint": "lora-7",
                ]
            )
        }
    }
}
